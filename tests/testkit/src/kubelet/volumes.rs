//! The local kubelet's volumes: each emptyDir becomes a directory
//! `<pod dir>/volumes/<volume name>/` shared by the pod's containers; the read-only kinds
//! (Secret and ConfigMap: one file per key with its decoded bytes and mode; downward API: the
//! pod's metadata; projected: all of these plus a ServiceAccount token from the TokenRequest
//! API) are read once when the pod starts and written, for each container that mounts them,
//! to `<pod dir>/containers/<container>/<volume name>/` just before it starts, and removed when
//! it ends. A container that does not mount such a volume finds no copy of it on disk (in a
//! real pod its mount namespace simply lacks it), which is what keeps an agent pod's tokens
//! out of the steps that must not see them. Each of the container's `volumeMounts` maps its
//! `mountPath` to its directory (or to its `subPath`).
//!
//! There is no mount namespace here: the process sees the host's filesystem. The mapping is
//! a path rewrite the kubelet applies where paths are handed to the container — its
//! `workingDir` and literal environment values — so a program that takes its paths from
//! there (as `countersign agent` does) finds its files. A path the program builds itself
//! from a constant (say `/var/run/countersign/task.json` hard-coded) is not rewritten.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

mod projected;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use kube::api::Api;

/// Kubernetes' default file mode for Secret and ConfigMap volume files.
const DEFAULT_MODE: i32 = 0o644;

/// Why a pod's volumes cannot be set up.
#[derive(Debug, thiserror::Error)]
pub(super) enum VolumeError {
    /// A Secret or ConfigMap (or one of its keys) is missing: a real kubelet keeps the pod
    /// in `ContainerCreating` and retries, so this one does too.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {what}")]
    NotReady {
        /// The pod volume.
        volume: String,
        /// What is missing, in the kubelet's words (`secret "x" not found`).
        what: String,
    },
    /// The pod asks for something this kubelet cannot do (a volume type other than
    /// emptyDir, secret or configMap, a mount of an undeclared volume, a path escaping the
    /// volume).
    #[error("{0}")]
    Unsupported(String),
    /// Reading the source or writing the files failed.
    #[error("cannot set up volume {volume:?}")]
    Io {
        /// The pod volume.
        volume: String,
        /// The failure.
        #[source]
        source: anyhow::Error,
    },
}

/// Each `mountPath` of the container and the local directory standing in for it.
#[derive(Clone, Debug, Default)]
pub(super) struct MountMap {
    /// (mount path without a trailing `/`, local path), longest mount path first so nested
    /// mounts win.
    mounts: Vec<(String, PathBuf)>,
}

impl MountMap {
    /// The local path for `path` when it is a mount path or lies under one (`<mount>/…`).
    pub(super) fn resolve(&self, path: &str) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(mount, local)| {
            let rest = if mount == "/" {
                path.strip_prefix('/')?
            } else if path == mount {
                ""
            } else {
                path.strip_prefix(mount.as_str())?.strip_prefix('/')?
            };
            Some(if rest.is_empty() {
                local.clone()
            } else {
                local.join(rest)
            })
        })
    }

    /// `value` with a leading mount path rewritten to its local directory, unchanged when it
    /// names no mounted path.
    pub(super) fn rewrite(&self, value: &str) -> String {
        self.resolve(value)
            .map_or_else(|| value.to_owned(), |p| p.display().to_string())
    }
}

/// The pod's volumes, set up: each emptyDir's local directory, and the files of each
/// read-only volume (written per container by [`Volumes::mounts`]).
#[derive(Clone, Debug, Default)]
pub(super) struct Volumes {
    dirs: BTreeMap<String, PathBuf>,
    contents: BTreeMap<String, Vec<File>>,
    pod_dir: PathBuf,
}

/// Creates `<pod dir>/volumes/<name>/` for every emptyDir and reads the files of Secret,
/// ConfigMap, downward API and projected volumes.
pub(super) async fn set_up(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<Volumes, VolumeError> {
    let volumes_dir = pod_dir.join("volumes");
    let mut dirs = BTreeMap::new();
    let mut read_only = BTreeMap::new();
    let spec = pod.spec.as_ref();
    for volume in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let files = contents(client, pod, volume).await?;
        if volume.empty_dir.is_some() {
            let dir = volumes_dir.join(&volume.name);
            write_volume(&dir, &files)
                .await
                .map_err(|source| VolumeError::Io {
                    volume: volume.name.clone(),
                    source,
                })?;
            dirs.insert(volume.name.clone(), dir);
        } else {
            read_only.insert(volume.name.clone(), files);
        }
    }
    Ok(Volumes {
        dirs,
        contents: read_only,
        pod_dir: pod_dir.to_owned(),
    })
}

impl Volumes {
    /// The directory holding `container`'s copies of the read-only volumes it mounts.
    fn container_dir(&self, container: &str) -> PathBuf {
        self.pod_dir.join("containers").join(container)
    }

    /// Removes `container`'s copies of the read-only volumes once it ended.
    pub(super) async fn release(&self, container: &str) {
        let dir = self.container_dir(container);
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), %error, "kubelet could not remove a container's volumes");
        }
    }

    /// `container`'s mount map: each `volumeMounts` entry's path and its local directory
    /// (a missing `subPath` is created, as the kubelet does). Read-only volumes are written
    /// for this container now.
    pub(super) async fn mounts(&self, container: &Container) -> Result<MountMap, VolumeError> {
        let mut mounts = Vec::new();
        let mut written = BTreeMap::new();
        for mount in container.volume_mounts.iter().flatten() {
            let dir = match (self.dirs.get(&mount.name), self.contents.get(&mount.name)) {
                (Some(dir), _) => dir.clone(),
                (None, Some(files)) => match written.get(&mount.name) {
                    Some(dir) => PathBuf::clone(dir),
                    None => {
                        let dir = self.container_dir(&container.name).join(&mount.name);
                        write_volume(&dir, files)
                            .await
                            .map_err(|source| VolumeError::Io {
                                volume: mount.name.clone(),
                                source,
                            })?;
                        written.insert(mount.name.clone(), dir.clone());
                        dir
                    }
                },
                (None, None) => {
                    return Err(VolumeError::Unsupported(format!(
                        "volumeMount {:?} names no volume of the pod",
                        mount.name
                    )));
                }
            };
            let dir = &dir;
            let local = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => dir.join(relative(sub).ok_or_else(|| {
                    VolumeError::Unsupported(format!("subPath {sub:?} leaves the volume"))
                })?),
                None => dir.clone(),
            };
            if mount.sub_path.is_some() && !local.exists() {
                tokio::fs::create_dir_all(&local)
                    .await
                    .map_err(|e| VolumeError::Io {
                        volume: mount.name.clone(),
                        source: e.into(),
                    })?;
            }
            let path = mount.mount_path.trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            mounts.push((path.to_owned(), local));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(MountMap { mounts })
    }
}

/// One file of a volume: path inside the volume, bytes, mode.
type File = (PathBuf, Vec<u8>, u32);

/// The data of a Secret or ConfigMap, `None` when it does not exist.
async fn source_data(
    client: &kube::Client,
    namespace: &str,
    kind: SourceKind,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, kube::Error> {
    Ok(match kind {
        SourceKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            api.get_opt(name).await?.map(|secret| {
                let mut data: BTreeMap<String, Vec<u8>> = secret
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            })
        }
        SourceKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            api.get_opt(name).await?.map(|map| {
                let mut data: BTreeMap<String, Vec<u8>> = map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    map.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                data
            })
        }
    })
}

#[derive(Clone, Copy, Debug)]
enum SourceKind {
    Secret,
    ConfigMap,
}

impl SourceKind {
    fn describe(self, name: &str) -> String {
        match self {
            SourceKind::Secret => format!("secret {name:?}"),
            SourceKind::ConfigMap => format!("configmap {name:?}"),
        }
    }
}

/// One Secret or ConfigMap as a volume or a projection shows it.
struct KeySource<'a> {
    kind: SourceKind,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
}

impl KeySource<'_> {
    async fn files(
        &self,
        client: &kube::Client,
        namespace: &str,
        volume: &str,
    ) -> Result<Vec<File>, VolumeError> {
        let what = self.kind.describe(self.name);
        let data = source_data(client, namespace, self.kind, self.name)
            .await
            .map_err(|source| VolumeError::Io {
                volume: volume.to_owned(),
                source: source.into(),
            })?;
        let Some(data) = data else {
            return if self.optional {
                Ok(Vec::new())
            } else {
                Err(VolumeError::NotReady {
                    volume: volume.to_owned(),
                    what: format!("{what} not found"),
                })
            };
        };
        select(
            volume,
            &what,
            data,
            self.items,
            self.default_mode,
            self.optional,
        )
    }
}

/// The files of `volume` (none for an emptyDir).
async fn contents(
    client: &kube::Client,
    pod: &Pod,
    volume: &Volume,
) -> Result<Vec<File>, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if volume.empty_dir.is_some() {
        return Ok(Vec::new());
    }
    if let Some(source) = &volume.secret {
        let source = KeySource {
            kind: SourceKind::Secret,
            name: source.secret_name.as_deref().unwrap_or_default(),
            items: source.items.as_deref(),
            default_mode: source.default_mode,
            optional: source.optional == Some(true),
        };
        return source.files(client, namespace, &volume.name).await;
    }
    if let Some(source) = &volume.config_map {
        let source = KeySource {
            kind: SourceKind::ConfigMap,
            name: &source.name,
            items: source.items.as_deref(),
            default_mode: source.default_mode,
            optional: source.optional == Some(true),
        };
        return source.files(client, namespace, &volume.name).await;
    }
    if let Some(source) = &volume.downward_api {
        return downward_files(
            pod,
            &volume.name,
            source.items.as_deref(),
            source.default_mode,
        );
    }
    if let Some(projected) = &volume.projected {
        return projected::files(client, pod, &volume.name, projected).await;
    }
    Err(VolumeError::Unsupported(format!(
        "volume {:?}: the local kubelet only sets up emptyDir, secret, configMap, downwardAPI \
         and projected volumes",
        volume.name
    )))
}

/// A downward API volume's files: `metadata.name`, `.namespace`, `.uid`, `.labels`,
/// `.annotations`, `spec.serviceAccountName` and `spec.nodeName` by `fieldRef`.
fn downward_files(
    pod: &Pod,
    volume: &str,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: Option<i32>,
) -> Result<Vec<File>, VolumeError> {
    let mut files = Vec::new();
    for item in items.into_iter().flatten() {
        let field = item.field_ref.as_ref().map(|f| f.field_path.as_str());
        let value = field.and_then(|f| downward_value(pod, f)).ok_or_else(|| {
            VolumeError::Unsupported(format!(
                "volume {volume:?}: the local kubelet cannot project {:?} (only metadata and \
                 spec.serviceAccountName/nodeName field references)",
                item.path
            ))
        })?;
        let path = relative(&item.path).ok_or_else(|| {
            VolumeError::Unsupported(format!("item path {:?} leaves the volume", item.path))
        })?;
        let mode = (item.mode.or(default_mode).unwrap_or(DEFAULT_MODE) & 0o777) as u32;
        files.push((path, value.into_bytes(), mode));
    }
    Ok(files)
}

/// A pod field as the downward API writes it (maps as sorted `key="value"` lines).
fn downward_value(pod: &Pod, field: &str) -> Option<String> {
    let lines = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match field {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => lines(meta.labels.as_ref()),
        "metadata.annotations" => lines(meta.annotations.as_ref()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        _ => return None,
    })
}

/// The files a Secret or ConfigMap volume shows: every key (file named after the key) or
/// only `items` (at their paths), with `mode` or `defaultMode` (0644 by default).
fn select(
    volume: &str,
    what: &str,
    mut data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Vec<File>, VolumeError> {
    let mode = |m: Option<i32>| (m.or(default_mode).unwrap_or(DEFAULT_MODE) & 0o777) as u32;
    let Some(items) = items else {
        return data
            .into_iter()
            .map(|(key, bytes)| {
                let path = relative(&key).ok_or_else(|| {
                    VolumeError::Unsupported(format!("key {key:?} of {what} is not a file name"))
                })?;
                Ok((path, bytes, mode(None)))
            })
            .collect();
    };
    let mut files = Vec::new();
    for item in items {
        let Some(bytes) = data.remove(&item.key) else {
            if optional {
                continue;
            }
            return Err(VolumeError::NotReady {
                volume: volume.to_owned(),
                what: format!("couldn't find key {} in {what}", item.key),
            });
        };
        let path = relative(&item.path).ok_or_else(|| {
            VolumeError::Unsupported(format!("item path {:?} leaves the volume", item.path))
        })?;
        files.push((path, bytes, mode(item.mode)));
    }
    Ok(files)
}

/// `path` when it is relative and stays inside its parent (no `..`, not absolute).
fn relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let inside = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    inside.then(|| p.to_owned())
}

/// Creates `dir` and writes `files` into it with their modes. The directory itself stays
/// writable so the pod directory can be removed (a real Secret volume is a read-only mount).
async fn write_volume(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("Cannot create {}", dir.display()))?;
    for (path, bytes, mode) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .with_context(|| format!("Cannot create {}", parent.display()))?;
        }
        // A retry after a missing key rewrites files it already wrote, read-only or not.
        let _ = tokio::fs::remove_file(&target).await;
        tokio::fs::write(&target, bytes)
            .await
            .with_context(|| format!("Cannot write {}", target.display()))?;
        set_mode(&target, *mode).await?;
    }
    Ok(())
}

#[cfg(unix)]
async fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .with_context(|| format!("Cannot set the mode of {}", path.display()))
}

#[cfg(not(unix))]
async fn set_mode(_: &Path, _: u32) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(mounts: &[(&str, &str)]) -> MountMap {
        let mut mounts: Vec<(String, PathBuf)> = mounts
            .iter()
            .map(|(m, l)| ((*m).to_owned(), PathBuf::from(l)))
            .collect();
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        MountMap { mounts }
    }

    #[test]
    fn paths_under_a_mount_are_rewritten_and_others_are_left_alone() {
        let m = map(&[
            ("/workspace", "/pod/volumes/workspace"),
            ("/workspace/cache", "/pod/volumes/cache"),
            ("/var/run/countersign", "/pod/volumes/task"),
        ]);
        assert_eq!(m.rewrite("/workspace"), "/pod/volumes/workspace");
        assert_eq!(
            m.rewrite("/workspace/src/lib.rs"),
            "/pod/volumes/workspace/src/lib.rs"
        );
        assert_eq!(
            m.rewrite("/workspace/cache/x"),
            "/pod/volumes/cache/x",
            "nested mounts win"
        );
        assert_eq!(
            m.rewrite("/var/run/countersign/task.json"),
            "/pod/volumes/task/task.json"
        );
        assert_eq!(
            m.rewrite("/workspaces"),
            "/workspaces",
            "a prefix is not a parent"
        );
        assert_eq!(m.rewrite("relative/workspace"), "relative/workspace");
        assert_eq!(m.rewrite("hello"), "hello");
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let data = BTreeMap::from([
            ("task.json".to_owned(), b"{}".to_vec()),
            ("token".to_owned(), b"t".to_vec()),
        ]);
        let all = select(
            "task",
            "secret \"s\"",
            data.clone(),
            None,
            Some(0o440),
            false,
        )
        .expect("all keys");
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|(_, _, mode)| *mode == 0o440));

        let items = [KeyToPath {
            key: "token".into(),
            path: "nested/token.txt".into(),
            mode: Some(0o400),
            ..KeyToPath::default()
        }];
        let picked = select(
            "task",
            "secret \"s\"",
            data.clone(),
            Some(&items),
            None,
            false,
        )
        .expect("items");
        assert_eq!(
            picked,
            vec![(PathBuf::from("nested/token.txt"), b"t".to_vec(), 0o400)]
        );

        let missing = [KeyToPath {
            key: "nope".into(),
            path: "nope".into(),
            mode: None,
            ..KeyToPath::default()
        }];
        assert!(matches!(
            select(
                "task",
                "secret \"s\"",
                data.clone(),
                Some(&missing),
                None,
                false
            ),
            Err(VolumeError::NotReady { .. })
        ));
        assert!(
            select(
                "task",
                "secret \"s\"",
                data.clone(),
                Some(&missing),
                None,
                true
            )
            .expect("optional")
            .is_empty()
        );
        let escaping = [KeyToPath {
            key: "token".into(),
            path: "../token".into(),
            mode: None,
            ..KeyToPath::default()
        }];
        assert!(matches!(
            select("task", "secret \"s\"", data, Some(&escaping), None, false),
            Err(VolumeError::Unsupported(_))
        ));
    }
}
