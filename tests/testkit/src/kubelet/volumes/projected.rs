//! Projected volumes, as the ServiceAccount admission plugin adds to every pod that does not
//! opt out (`kube-api-access-*`: a ServiceAccount token, the `kube-root-ca.crt` ConfigMap
//! and the namespace from the downward API), and as pods declare them.
//!
//! The token comes from the TokenRequest API for the pod's ServiceAccount, bound to the pod,
//! as the kubelet asks for it; it is written once and not refreshed.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Pod, ProjectedVolumeSource, ServiceAccount, ServiceAccountTokenProjection,
};
use kube::api::{Api, PostParams};

use super::{DEFAULT_MODE, File, KeySource, SourceKind, VolumeError, downward_files, relative};

/// Token lifetime when the projection names none (the API's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// The files of a projected volume: every source's, in order.
pub(super) async fn files(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    source: &ProjectedVolumeSource,
) -> Result<Vec<File>, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files = Vec::new();
    for projection in source.sources.iter().flatten() {
        if let Some(secret) = &projection.secret {
            let source = KeySource {
                kind: SourceKind::Secret,
                name: &secret.name,
                items: secret.items.as_deref(),
                default_mode: source.default_mode,
                optional: secret.optional == Some(true),
            };
            files.extend(source.files(client, namespace, volume).await?);
        } else if let Some(map) = &projection.config_map {
            let source = KeySource {
                kind: SourceKind::ConfigMap,
                name: &map.name,
                items: map.items.as_deref(),
                default_mode: source.default_mode,
                optional: map.optional == Some(true),
            };
            files.extend(source.files(client, namespace, volume).await?);
        } else if let Some(downward) = &projection.downward_api {
            files.extend(downward_files(
                pod,
                volume,
                downward.items.as_deref(),
                source.default_mode,
            )?);
        } else if let Some(token) = &projection.service_account_token {
            files.push(token_file(client, pod, volume, token, source.default_mode).await?);
        } else {
            return Err(VolumeError::Unsupported(format!(
                "volume {volume:?}: the local kubelet projects only secrets, configMaps, the \
                 downward API and ServiceAccount tokens"
            )));
        }
    }
    Ok(files)
}

/// A token for the pod's ServiceAccount, bound to the pod, from the TokenRequest API.
async fn token_file(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    projection: &ServiceAccountTokenProjection,
    default_mode: Option<i32>,
) -> Result<File, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|name| !name.is_empty())
        .unwrap_or("default");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // No audience: the apiserver's own (`--api-audiences`).
            audiences: projection.audience.clone().map(|a| vec![a]),
            expiration_seconds: Some(
                projection
                    .expiration_seconds
                    .unwrap_or(DEFAULT_TOKEN_SECONDS),
            ),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let not_ready = |what: String| VolumeError::NotReady {
        volume: volume.to_owned(),
        what,
    };
    let answer = api
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|err| {
            not_ready(format!(
                "failed to fetch token for serviceaccount {account:?}: {err}"
            ))
        })?;
    let token = answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| not_ready("the TokenRequest answer holds no token".into()))?;
    let path = relative(&projection.path).ok_or_else(|| {
        VolumeError::Unsupported(format!(
            "token path {:?} leaves the volume",
            projection.path
        ))
    })?;
    let mode = (default_mode.unwrap_or(DEFAULT_MODE) & 0o777) as u32;
    Ok((path, token.into_bytes(), mode))
}
