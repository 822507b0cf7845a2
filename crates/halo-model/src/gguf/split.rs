//! Split GGUF sets: `name-00001-of-00003.gguf` and its siblings, each a complete GGUF file
//! holding some of the tensors; the first also holds the model's metadata.

use super::error::GgufError;
use std::path::{Path, PathBuf};

pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS: &str = "split.tensors.count";

/// A file name's place in a split set: `(prefix, index from 1, count)`.
pub fn parse_split_name(file_name: &str) -> Option<(&str, usize, usize)> {
    let stem = file_name.strip_suffix(".gguf")?;
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index >= 1 && index <= count).then_some((prefix, index, count))
}

/// The paths of every shard of the set `first` belongs to (just `first` when it is not part
/// of a set), checking that each exists.
pub fn shard_paths(first: &Path) -> Result<Vec<PathBuf>, GgufError> {
    let name = first.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((prefix, index, count)) = parse_split_name(name) else {
        return Ok(vec![first.to_path_buf()]);
    };
    if index != 1 {
        return Err(GgufError::Split {
            msg: format!(
                "'{name}' is shard {index}; open the first, {prefix}-00001-of-{count:05}.gguf"
            ),
        });
    }
    let dir = first.parent().unwrap_or(Path::new(""));
    (1..=count)
        .map(|i| {
            let p = dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf"));
            if p.is_file() {
                Ok(p)
            } else {
                Err(GgufError::Split {
                    msg: format!("shard {} of {count} is missing", p.display()),
                })
            }
        })
        .collect()
}

/// The one model file in a directory of GGUF files: a single file, or the first shard of one
/// split set. `Ok(None)` when the directory holds no GGUF file.
pub fn find_in_dir(dir: &Path) -> std::io::Result<Option<Result<PathBuf, GgufError>>> {
    let mut ggufs: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".gguf") && entry.path().is_file() {
            ggufs.push(name);
        }
    }
    ggufs.sort();
    Ok(match ggufs.as_slice() {
        [] => None,
        [one] => Some(Ok(dir.join(one))),
        many => {
            let sets: Vec<_> = many
                .iter()
                .map(|n| parse_split_name(n).map(|(p, _, c)| (p, c)))
                .collect();
            let one_set = sets.iter().all(|s| s.is_some() && *s == sets[0]);
            if one_set {
                Some(Ok(dir.join(&many[0])))
            } else {
                Some(Err(GgufError::ManyFiles {
                    count: many.len(),
                    names: many.join(", "),
                }))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        assert_eq!(
            parse_split_name("m-q4-00002-of-00003.gguf"),
            Some(("m-q4", 2, 3))
        );
        assert_eq!(parse_split_name("m.gguf"), None);
        assert_eq!(parse_split_name("m-00004-of-00003.gguf"), None);
        assert_eq!(parse_split_name("m-1-of-3.gguf"), None);
    }
}
