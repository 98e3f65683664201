//! Provider API keys, read from the Secrets the Agents name (`providers[].apiKeySecretRef`)
//! with the gateway's own service account, and kept in memory briefly so a key rotation
//! reaches the gateway within [`KEY_TTL`]. Keys never leave this process except in the one
//! header of a request to their provider.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use countersign_crds::SecretKeyRef;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use secrecy::SecretString;

/// How long a key read from a Secret is used before it is read again.
pub const KEY_TTL: Duration = Duration::from_secs(30);

/// Why a provider key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The Secret or its key does not exist.
    #[error("Secret {secret:?} has no key {key:?}")]
    Missing {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// The apiserver could not be asked (or refused the gateway).
    #[error("cannot read Secret {secret:?}")]
    Api {
        /// The Secret.
        secret: String,
        /// What went wrong.
        #[source]
        source: kube::Error,
    },
}

/// Cached keys by (namespace, Secret, key), with when each was read.
type KeyCache = HashMap<(String, String, String), (SecretString, Instant)>;

/// Provider keys by Secret reference, cached for [`KEY_TTL`].
pub struct Keys {
    client: kube::Client,
    cache: Mutex<KeyCache>,
}

impl Keys {
    /// Keys read through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The key `reference` names in `namespace`.
    pub async fn get(
        &self,
        namespace: &str,
        reference: &SecretKeyRef,
    ) -> Result<SecretString, KeyError> {
        let id = (
            namespace.to_owned(),
            reference.name.clone(),
            reference.key.clone(),
        );
        if let Some((key, at)) = self.lock().get(&id)
            && at.elapsed() < KEY_TTL
        {
            return Ok(key.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api
            .get_opt(&reference.name)
            .await
            .map_err(|source| KeyError::Api {
                secret: reference.name.clone(),
                source,
            })?;
        let missing = || KeyError::Missing {
            secret: reference.name.clone(),
            key: reference.key.clone(),
        };
        let secret = secret.ok_or_else(missing)?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key))
                    .map(|s| s.clone().into_bytes())
            })
            .ok_or_else(missing)?;
        let key = SecretString::from(String::from_utf8_lossy(&bytes).trim().to_owned());
        self.lock().insert(id, (key.clone(), Instant::now()));
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
