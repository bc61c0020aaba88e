//! Paths as a fleet stores them: each node mounts a watch folder at its own
//! `path`, so a path under a watch folder is stored as `@<name>/<relative
//! path>` and read back through this node's mount of `<name>`. Other paths
//! (staged files, a one-off `upload`) are stored as they are: only the node
//! that recorded them reads them (see `origin` in the schema).

use std::path::{Path, PathBuf};

use crate::journal::codec::{bytes_path, path_bytes};

/// This node's watch folders: fleet-wide name and local path.
#[derive(Debug, Clone, Default)]
pub struct Mounts(Vec<(String, PathBuf)>);

impl Mounts {
    pub fn new(mut mounts: Vec<(String, PathBuf)>) -> Mounts {
        // The longest path first, so a nested mount wins.
        mounts.sort_by_key(|(_, p)| std::cmp::Reverse(p.as_os_str().len()));
        Mounts(mounts)
    }

    /// The fleet-wide names of this node's watch folders.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The watch folder `p` is in (or is), by name.
    pub fn watch_of(&self, p: &Path) -> Option<&str> {
        self.0.iter().find(|(_, local)| p.starts_with(local)).map(|(n, _)| n.as_str())
    }

    /// `p` as stored.
    pub fn encode(&self, p: &Path) -> Vec<u8> {
        for (name, local) in &self.0 {
            if let Ok(rel) = p.strip_prefix(local) {
                let mut out = format!("@{name}").into_bytes();
                let rel = path_bytes(rel);
                if !rel.is_empty() {
                    out.push(b'/');
                    out.extend_from_slice(&rel);
                }
                return out;
            }
        }
        path_bytes(p)
    }

    /// A stored path, through this node's mounts. A watch folder this node
    /// does not have reads back as the stored text (`@name/…`), which names
    /// no file here.
    pub fn decode(&self, b: &[u8]) -> PathBuf {
        if let Some(rest) = b.strip_prefix(b"@") {
            let (name, rel) = match rest.iter().position(|c| *c == b'/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            if let Some((_, local)) = self.0.iter().find(|(n, _)| n.as_bytes() == name) {
                return if rel.is_empty() { local.clone() } else { local.join(bytes_path(rel)) };
            }
        }
        bytes_path(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_under_a_watch_folder_is_stored_by_name_and_read_through_another_mount() {
        let a = Mounts::new(vec![("exports".into(), "/mnt/a/exports".into()), ("x".into(), "/srv".into())]);
        let b = Mounts::new(vec![("exports".into(), "/Volumes/share".into())]);
        let stored = a.encode(Path::new("/mnt/a/exports/show/ep1/left.mov"));
        assert_eq!(stored, b"@exports/show/ep1/left.mov");
        assert_eq!(b.decode(&stored), PathBuf::from("/Volumes/share/show/ep1/left.mov"));
        assert_eq!(a.encode(Path::new("/mnt/a/exports")), b"@exports");
        assert_eq!(b.decode(b"@exports"), PathBuf::from("/Volumes/share"));
        // Not under a watch folder: as it is.
        assert_eq!(a.encode(Path::new("/var/lib/staging/z.zip")), b"/var/lib/staging/z.zip");
        assert_eq!(b.decode(b"/var/lib/staging/z.zip"), PathBuf::from("/var/lib/staging/z.zip"));
        // A watch folder this node lacks names no file here.
        assert_eq!(b.decode(b"@x/a"), PathBuf::from("@x/a"));
        assert_eq!(a.watch_of(Path::new("/srv/q")), Some("x"));
        assert_eq!(a.watch_of(Path::new("/srvx/q")), None, "a prefix of the name is not the folder");
    }
}
