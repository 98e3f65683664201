//! Read-modify-write of the ConfigMaps the gateway owns (the usage ledgers, the runs'
//! milestones): read, change, write back with the read `resourceVersion`, and start again
//! when another writer (another replica) got there first.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::ledger::MANAGER;

/// Why an update did not happen.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// The apiserver refused or could not be reached.
    Api(kube::Error),
    /// The change itself refused (e.g. an allowance is used up).
    Refused(E),
    /// Other writers won every try.
    Contended(u32),
}

impl<E: std::fmt::Display> std::fmt::Display for UpdateError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Api(e) => write!(f, "{e}"),
            UpdateError::Refused(e) => write!(f, "{e}"),
            UpdateError::Contended(tries) => {
                write!(f, "other writers changed it first {tries} times in a row")
            }
        }
    }
}

/// Sets key `key` of ConfigMap `metadata.name` to what `change` makes of the stored one
/// (`None` when there is none), with `metadata`'s labels and owners; up to `tries` times
/// when others write it meanwhile. Returns what `change` returned with the value written.
pub async fn update<T, E>(
    api: &Api<ConfigMap>,
    metadata: &ObjectMeta,
    key: &str,
    tries: u32,
    mut change: impl FnMut(Option<&ConfigMap>) -> Result<(String, T), E>,
) -> Result<T, UpdateError<E>> {
    let name = metadata.name.clone().unwrap_or_default();
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    for _ in 0..tries {
        let current = api.get_opt(&name).await.map_err(UpdateError::Api)?;
        let (value, result) = change(current.as_ref()).map_err(UpdateError::Refused)?;
        let version = current.and_then(|c| c.metadata.resource_version);
        let map = ConfigMap {
            metadata: ObjectMeta {
                resource_version: version.clone(),
                ..metadata.clone()
            },
            data: Some(BTreeMap::from([(key.to_owned(), value)])),
            ..ConfigMap::default()
        };
        let written = match version {
            Some(_) => api.replace(&name, &params, &map).await,
            None => api.create(&params, &map).await,
        };
        match written {
            Ok(_) => return Ok(result),
            // Changed since the read, or created by someone else first.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(UpdateError::Api(e)),
        }
    }
    Err(UpdateError::Contended(tries))
}
