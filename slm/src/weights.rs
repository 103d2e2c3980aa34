//! Loading and saving safetensors weights with Hugging Face tensor names.

use crate::error::{Result, SlmError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Tensor};

/// The weight files of a model folder: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = crate::config::read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| SlmError::config(&index, "no `weight_map` object"))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    Err(SlmError::io(
        single,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no model.safetensors (or sharded index) in the model folder",
        ),
    ))
}

/// What a load found: file tensors no variable took (e.g. a pooler we do not use) and variables
/// left at their initial values because the file lacks them and the caller allowed it.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub unused: Vec<String>,
    pub initialized: Vec<String>,
}

/// Copies the tensors of `dir` into every variable of `vs`, converting dtype and device.
///
/// `candidates(var_name)` lists the file names to try for a variable, in order (e.g. with and
/// without a `bert.` prefix). A variable found nowhere is an error unless `optional(var_name)`.
/// A shape mismatch is always an error naming the tensor.
pub fn load_into(
    vs: &VarStore,
    dir: &Path,
    candidates: impl Fn(&str) -> Vec<String>,
    optional: impl Fn(&str) -> bool,
) -> Result<LoadReport> {
    let files = weight_files(dir)?;
    let mut file_tensors: HashMap<String, (Tensor, PathBuf)> = HashMap::new();
    for f in &files {
        let tensors = Tensor::read_safetensors(f).map_err(|e| SlmError::Weights {
            path: f.clone(),
            name: "*".into(),
            message: format!("cannot read safetensors: {e}"),
        })?;
        for (name, t) in tensors {
            file_tensors.insert(name, (t, f.clone()));
        }
    }
    let mut used = HashSet::new();
    let mut report = LoadReport::default();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let found = candidates(&name)
            .into_iter()
            .find(|c| file_tensors.contains_key(c));
        let Some(key) = found else {
            if optional(&name) {
                report.initialized.push(name);
                continue;
            }
            return Err(SlmError::Weights {
                path: dir.to_path_buf(),
                name,
                message: "missing from the weight files".into(),
            });
        };
        let (t, path) = &file_tensors[&key];
        if t.size() != var.size() {
            return Err(SlmError::Weights {
                path: path.clone(),
                name: key,
                message: format!(
                    "shape {:?} in the file, the config implies {:?}",
                    t.size(),
                    var.size()
                ),
            });
        }
        tch::no_grad(|| var.f_copy_(t))?;
        used.insert(key);
    }
    report.unused = file_tensors
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    report.unused.sort();
    Ok(report)
}

/// Writes every variable of `vs` to `path` as safetensors, names unchanged (HF layout), after
/// mapping each name through `rename`.
pub fn save_var_store(vs: &VarStore, path: &Path, rename: impl Fn(&str) -> String) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| {
            (
                rename(&n),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, path).map_err(|e| SlmError::Weights {
        path: path.to_path_buf(),
        name: "*".into(),
        message: format!("cannot write: {e}"),
    })
}
