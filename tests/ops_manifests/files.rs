//! Shared helpers: the repository's files, their YAML, and the Kubernetes objects under `ops/`.

use std::path::{Path, PathBuf};

use serde_norway::Value as Yaml;

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub(crate) fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` (relative to the repository), recursively, sorted.
pub(crate) fn files_under(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join(dir), &mut out);
    out.sort();
    out
}

pub(crate) fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every YAML document of a file.
pub(crate) fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            <Yaml as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", relative(path)))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// One Kubernetes object and the file it is in.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub(crate) file: String,
    pub(crate) doc: Yaml,
}

impl Object {
    pub(crate) fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    pub(crate) fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// The Kubernetes manifests: every YAML document under `ops/k8s`,
/// `ops/keda` and `ops/autoscaler`.
pub(crate) fn k8s_objects() -> Vec<Object> {
    ["ops/k8s", "ops/keda", "ops/autoscaler"]
        .iter()
        .flat_map(|dir| files_under(dir))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .flat_map(|path| {
            let file = relative(&path);
            yaml_docs(&path).into_iter().map(move |doc| Object {
                file: file.clone(),
                doc,
            })
        })
        .collect()
}

pub(crate) fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Object {
    objects
        .iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} under ops/"))
}

pub(crate) fn seq(value: &Yaml) -> &[Yaml] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

pub(crate) fn text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}
