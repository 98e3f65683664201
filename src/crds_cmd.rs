//! `countersign crds`: prints or writes the CustomResourceDefinitions.

use std::fs;
use std::path::Path;

use anyhow::Context;

/// All CRDs as one multi-document YAML stream, in a stable order.
pub fn render_all() -> anyhow::Result<String> {
    countersign_crds::all()
        .iter()
        .map(|crd| countersign_crds::to_yaml(crd).context("Cannot render a CRD as YAML"))
        .collect()
}

/// Writes one file per CRD into `dir` (e.g. `crds/agentruns.countersign.dev.yaml`).
pub fn write_dir(dir: &Path) -> anyhow::Result<Vec<String>> {
    fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for crd in countersign_crds::all() {
        let name = countersign_crds::generate::file_name(&crd);
        let path = dir.join(&name);
        let yaml = countersign_crds::to_yaml(&crd).context("Cannot render a CRD as YAML")?;
        fs::write(&path, yaml).with_context(|| format!("Cannot write {}", path.display()))?;
        written.push(name);
    }
    Ok(written)
}
