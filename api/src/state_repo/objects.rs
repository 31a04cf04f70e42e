//! Git objects made in memory: blobs, trees and commits are hashed and kept in a [`Staging`] area
//! until [`super::pack`] writes them to disk as one pack, instead of going through libgit2's object
//! database. libgit2 checks every object it writes against every backend first and, on a miss,
//! rescans the pack folder; a change writes a dozen new objects, so that rescan alone grew with the
//! number of packs. Here a new object costs its hash and nothing else, and the objects of a batch
//! are known exactly when it is time to write them.
//!
//! Tree edits read only the trees on the paths of the edits (from the staging area, a bounded cache
//! of recently read or written trees and blobs, or the repository), so their cost follows the size of those trees,
//! not of the repository.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use git2::{ObjectType, Oid, Repository, Signature};

use super::Edit;

/// Mode of a regular file entry, as libgit2's tree builder writes it.
const FILE_MODE: &[u8] = b"100644";
/// Mode of a folder entry.
const TREE_MODE: &[u8] = b"40000";

/// The id git gives an object: SHA-1 of "<kind> <size>\0" and the contents. Computed with the
/// CPU's SHA instructions where it has them; libgit2's own hashing also checks for SHA-1
/// collision attacks, which costs several times more and guards against objects crafted by
/// someone else, while these are objects the api makes itself.
pub fn object_id(kind: ObjectType, data: &[u8]) -> Result<Oid, git2::Error> {
    use sha1::Digest;
    let name = match kind {
        ObjectType::Commit => "commit",
        ObjectType::Tree => "tree",
        ObjectType::Blob => "blob",
        ObjectType::Tag => "tag",
        other => {
            return Err(git2::Error::from_str(&format!(
                "{other} is not an object type"
            )))
        }
    };
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("{name} {}\0", data.len()).as_bytes());
    hasher.update(data);
    Oid::from_bytes(&hasher.finalize())
}

/// Objects made since they were last written to disk, in the order they were made.
#[derive(Default)]
pub struct Staging {
    objects: HashMap<Oid, (ObjectType, Arc<[u8]>)>,
    order: Vec<Oid>,
}

impl Staging {
    /// Hashes and keeps an object; returns its id.
    pub fn put(&mut self, kind: ObjectType, data: Vec<u8>) -> Result<Oid, git2::Error> {
        let id = object_id(kind, &data)?;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.objects.entry(id) {
            slot.insert((kind, data.into()));
            self.order.push(id);
        }
        Ok(id)
    }

    pub fn get(&self, id: Oid) -> Option<(ObjectType, Arc<[u8]>)> {
        self.objects.get(&id).cloned()
    }

    pub fn contains(&self, id: Oid) -> bool {
        self.objects.contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The objects in the order they were made.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, ObjectType, &[u8])> + '_ {
        self.order.iter().map(|id| {
            let (kind, data) = &self.objects[id];
            (*id, *kind, &data[..])
        })
    }

    /// Moves the objects of `other` here.
    pub fn absorb(&mut self, other: Staging) {
        let Staging { mut objects, order } = other;
        for id in order {
            if let Some(object) = objects.remove(&id) {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.objects.entry(id) {
                    slot.insert(object);
                    self.order.push(id);
                }
            }
        }
    }

    /// Empties the area, handing back the trees and blobs (what later changes may read again:
    /// the folders on their paths, a shard's index and tenant table, a tenant's files).
    pub fn take_readable(&mut self) -> Vec<(Oid, ObjectType, Arc<[u8]>)> {
        self.order.clear();
        self.objects
            .drain()
            .filter(|(_, (kind, _))| *kind != ObjectType::Commit)
            .map(|(id, (kind, data))| (id, kind, data))
            .collect()
    }
}

/// Raw trees and blobs read or written recently, so that what a change reads (the root,
/// `tenants/`, `flux/`, a shard's index and tenant table...) is not decompressed again for every
/// change. Bounded by size, in two generations: when the young one is full it becomes the old one
/// and the former old one is dropped; a hit in the old one moves the object back to the young one.
pub struct ObjectCache {
    young: HashMap<Oid, (ObjectType, Arc<[u8]>)>,
    old: HashMap<Oid, (ObjectType, Arc<[u8]>)>,
    young_bytes: usize,
    /// The most a generation holds.
    limit: usize,
}

impl ObjectCache {
    /// A cache of at most about `limit` bytes.
    pub fn new(limit: usize) -> ObjectCache {
        ObjectCache {
            young: HashMap::new(),
            old: HashMap::new(),
            young_bytes: 0,
            limit: limit / 2,
        }
    }

    pub fn get(&mut self, id: Oid) -> Option<(ObjectType, Arc<[u8]>)> {
        if let Some(found) = self.young.get(&id) {
            return Some(found.clone());
        }
        let (kind, data) = self.old.remove(&id)?;
        self.insert(id, kind, data.clone());
        Some((kind, data))
    }

    pub fn insert(&mut self, id: Oid, kind: ObjectType, data: Arc<[u8]>) {
        if data.len() > self.limit {
            return;
        }
        if self.young_bytes + data.len() > self.limit {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        let len = data.len();
        if self.young.insert(id, (kind, data)).is_none() {
            self.young_bytes += len;
        }
    }
}

/// Where objects are read from: the staging area, then the object cache, then the repository.
pub struct Objects<'a> {
    pub repo: &'a Repository,
    pub staged: &'a Staging,
    pub cache: Option<&'a std::cell::RefCell<ObjectCache>>,
}

impl Objects<'_> {
    pub fn read(&self, id: Oid) -> Result<(ObjectType, Arc<[u8]>), git2::Error> {
        if let Some(found) = self.staged.get(id) {
            return Ok(found);
        }
        if let Some(cache) = self.cache {
            if let Some(found) = cache.borrow_mut().get(id) {
                return Ok(found);
            }
        }
        let odb = self.repo.odb()?;
        let object = odb.read(id)?;
        let kind = object.kind();
        let data: Arc<[u8]> = object.data().into();
        if kind != ObjectType::Commit {
            if let Some(cache) = self.cache {
                cache.borrow_mut().insert(id, kind, data.clone());
            }
        }
        Ok((kind, data))
    }

    pub fn tree(&self, id: Oid) -> Result<Arc<[u8]>, git2::Error> {
        match self.read(id)? {
            (ObjectType::Tree, data) => Ok(data),
            (kind, _) => Err(git2::Error::from_str(&format!(
                "object {id} is a {kind}, not a tree"
            ))),
        }
    }

    /// The tree of commit `id`.
    pub fn commit_tree(&self, id: Oid) -> Result<Oid, git2::Error> {
        let (kind, data) = self.read(id)?;
        if kind != ObjectType::Commit {
            return Err(git2::Error::from_str(&format!(
                "object {id} is a {kind}, not a commit"
            )));
        }
        data.strip_prefix(b"tree ")
            .and_then(|rest| rest.get(..40))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| Oid::from_str(hex).ok())
            .ok_or_else(|| git2::Error::from_str(&format!("commit {id} names no tree")))
    }

    /// The entry at `path` ('/'-separated) under tree `root`: (mode, id).
    pub fn entry(&self, root: Oid, path: &str) -> Result<Option<(Vec<u8>, Oid)>, git2::Error> {
        let mut tree = root;
        let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
        while let Some(part) = parts.next() {
            let data = self.tree(tree)?;
            let Some(entry) = parse_tree(&data)?
                .into_iter()
                .find(|e| e.name == part.as_bytes())
            else {
                return Ok(None);
            };
            if parts.peek().is_none() {
                return Ok(Some((entry.mode.to_vec(), entry.id)));
            }
            if entry.mode != TREE_MODE {
                return Ok(None);
            }
            tree = entry.id;
        }
        Ok(Some((TREE_MODE.to_vec(), root)))
    }

    /// The contents of the file at `path` under tree `root`; None when absent or not a file.
    pub fn file(&self, root: Oid, path: &str) -> Result<Option<Arc<[u8]>>, git2::Error> {
        match self.entry(root, path)? {
            Some((mode, id)) if mode != TREE_MODE && mode != b"160000" => match self.read(id)? {
                (ObjectType::Blob, data) => Ok(Some(data)),
                _ => Ok(None),
            },
            _ => Ok(None),
        }
    }
}

/// One entry of a raw tree object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry<'a> {
    pub mode: std::borrow::Cow<'a, [u8]>,
    pub name: std::borrow::Cow<'a, [u8]>,
    pub id: Oid,
}

impl TreeEntry<'_> {
    fn is_tree(&self) -> bool {
        self.mode.as_ref() == TREE_MODE
    }
}

/// The entries of a raw tree object ("<mode> <name>\0<20-byte id>" each).
pub fn parse_tree(data: &[u8]) -> Result<Vec<TreeEntry<'_>>, git2::Error> {
    let malformed = || git2::Error::from_str("malformed tree object");
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let nul = rest.iter().position(|b| *b == 0).ok_or_else(malformed)?;
        let header = &rest[..nul];
        let space = header
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(malformed)?;
        let id = rest.get(nul + 1..nul + 21).ok_or_else(malformed)?;
        entries.push(TreeEntry {
            mode: header[..space].into(),
            name: header[space + 1..].into(),
            id: Oid::from_bytes(id)?,
        });
        rest = &rest[nul + 21..];
    }
    Ok(entries)
}

/// Git's order of tree entries: by name, a folder comparing as if its name ended in '/'.
fn tree_order(a: &TreeEntry<'_>, b: &TreeEntry<'_>) -> Ordering {
    let len = a.name.len().min(b.name.len());
    match a.name[..len].cmp(&b.name[..len]) {
        Ordering::Equal => {}
        other => return other,
    }
    let end = |e: &TreeEntry<'_>| {
        e.name
            .get(len)
            .copied()
            .unwrap_or(if e.is_tree() { b'/' } else { 0 })
    };
    end(a).cmp(&end(b))
}

/// The raw tree object of `entries` (sorted here).
pub fn write_tree(entries: &mut [TreeEntry<'_>]) -> Vec<u8> {
    entries.sort_by(tree_order);
    let mut data = Vec::with_capacity(entries.len() * 48);
    for e in entries.iter() {
        data.extend_from_slice(&e.mode);
        data.push(b' ');
        data.extend_from_slice(&e.name);
        data.push(0);
        data.extend_from_slice(e.id.as_bytes());
    }
    data
}

/// The raw commit object, byte for byte what libgit2's `git_commit_create` writes.
pub fn commit_object(
    tree: Oid,
    parents: &[Oid],
    author: &Signature<'_>,
    committer: &Signature<'_>,
    message: &str,
) -> Vec<u8> {
    let mut data = Vec::with_capacity(256 + message.len());
    data.extend_from_slice(format!("tree {tree}\n").as_bytes());
    for parent in parents {
        data.extend_from_slice(format!("parent {parent}\n").as_bytes());
    }
    signature_line(&mut data, "author", author);
    signature_line(&mut data, "committer", committer);
    data.push(b'\n');
    data.extend_from_slice(message.as_bytes());
    data
}

fn signature_line(data: &mut Vec<u8>, kind: &str, sig: &Signature<'_>) {
    let when = sig.when();
    let offset = when.offset_minutes().unsigned_abs();
    data.extend_from_slice(kind.as_bytes());
    data.push(b' ');
    data.extend_from_slice(sig.name_bytes());
    data.extend_from_slice(b" <");
    data.extend_from_slice(sig.email_bytes());
    data.extend_from_slice(
        format!(
            "> {} {}{:02}{:02}\n",
            when.seconds(),
            when.sign(),
            offset / 60,
            offset % 60
        )
        .as_bytes(),
    );
}

/// Builds the tree of `base` (None: empty) with `edits` applied; returns its id and the new
/// objects it needs. Later edits of a path win over earlier ones; a folder left empty disappears.
/// Files and folders that come out the same as in `base` are not made again, so the new tree only
/// refers to objects returned here or already reachable from `base`.
pub fn edit_tree(
    objects: &Objects<'_>,
    base: Option<Oid>,
    edits: &[Edit],
) -> Result<(Oid, Staging), git2::Error> {
    let mut root = Node::default();
    for edit in edits {
        root.insert(edit);
    }
    let mut made = Staging::default();
    let id = write_node(objects, &mut made, base, &root)?;
    let id = match id {
        Some(id) => id,
        None => made.put(ObjectType::Tree, Vec::new())?,
    };
    Ok((id, made))
}

fn write_node(
    objects: &Objects<'_>,
    made: &mut Staging,
    existing: Option<Oid>,
    node: &Node,
) -> Result<Option<Oid>, git2::Error> {
    let data = match existing {
        Some(id) => Some(objects.tree(id)?),
        None => None,
    };
    let mut entries: Vec<TreeEntry<'_>> = match &data {
        Some(data) => parse_tree(data)?,
        None => Vec::new(),
    };
    for (name, child) in &node.children {
        let position = entries
            .iter()
            .position(|e| e.name.as_ref() == name.as_bytes());
        match child {
            Change::Remove => {
                if let Some(p) = position {
                    entries.remove(p);
                }
            }
            Change::Write(contents) => {
                let id = object_id(ObjectType::Blob, contents)?;
                let same = position
                    .is_some_and(|p| entries[p].id == id && entries[p].mode.as_ref() == FILE_MODE);
                if same {
                    continue;
                }
                made.put(ObjectType::Blob, contents.clone())?;
                let entry = TreeEntry {
                    mode: FILE_MODE.into(),
                    name: name.as_bytes().to_vec().into(),
                    id,
                };
                match position {
                    Some(p) => entries[p] = entry,
                    None => entries.push(entry),
                }
            }
            Change::Dir(sub) => {
                let current = position
                    .filter(|p| entries[*p].is_tree() && !sub.replace)
                    .map(|p| entries[p].id);
                match write_node(objects, made, current, sub)? {
                    Some(id) => {
                        let entry = TreeEntry {
                            mode: TREE_MODE.into(),
                            name: name.as_bytes().to_vec().into(),
                            id,
                        };
                        match position {
                            Some(p) => entries[p] = entry,
                            None => entries.push(entry),
                        }
                    }
                    None => {
                        if let Some(p) = position {
                            entries.remove(p);
                        }
                    }
                }
            }
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let raw = write_tree(&mut entries);
    let id = object_id(ObjectType::Tree, &raw)?;
    if Some(id) != existing {
        made.put(ObjectType::Tree, raw)?;
    }
    Ok(Some(id))
}

#[derive(Default, Debug)]
struct Node {
    children: BTreeMap<String, Change>,
    /// The folder was removed before being written to: start from empty, not from its old content.
    replace: bool,
}

#[derive(Debug)]
enum Change {
    Write(Vec<u8>),
    Remove,
    Dir(Node),
}

impl Node {
    /// Later edits win over earlier ones on the same path.
    fn insert(&mut self, edit: &Edit) {
        let parts: Vec<&str> = edit.path().split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return;
        };
        let mut node = self;
        for dir in dirs {
            let entry = node
                .children
                .entry((*dir).to_owned())
                .or_insert_with(|| Change::Dir(Node::default()));
            if !matches!(entry, Change::Dir(_)) {
                *entry = Change::Dir(Node {
                    children: BTreeMap::new(),
                    replace: true,
                });
            }
            let Change::Dir(next) = entry else {
                unreachable!("just made a folder")
            };
            node = next;
        }
        let change = match edit {
            Edit::Write { contents, .. } => Change::Write(contents.clone()),
            Edit::Remove { .. } => Change::Remove,
        };
        node.children.insert((*last).to_owned(), change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        (dir, repo)
    }

    /// The same edits through libgit2's tree builder, for comparison.
    fn libgit2_tree(repo: &Repository, files: &[(&str, &[u8])]) -> Oid {
        type Files<'a> = Vec<(Vec<&'a str>, &'a [u8])>;
        fn build(repo: &Repository, files: &[(Vec<&str>, &[u8])]) -> Oid {
            let mut builder = repo.treebuilder(None).unwrap();
            let mut dirs: BTreeMap<&str, Files<'_>> = BTreeMap::new();
            for (parts, contents) in files {
                if parts.len() == 1 {
                    let blob = repo.blob(contents).unwrap();
                    builder.insert(parts[0], blob, 0o100644).unwrap();
                } else {
                    dirs.entry(parts[0])
                        .or_default()
                        .push((parts[1..].to_vec(), contents));
                }
            }
            for (name, sub) in dirs {
                let id = build(repo, &sub);
                builder.insert(name, id, 0o040000).unwrap();
            }
            builder.write().unwrap()
        }
        let files: Vec<(Vec<&str>, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.split('/').collect(), *c))
            .collect();
        build(repo, &files)
    }

    #[test]
    fn trees_and_commits_match_libgit2_byte_for_byte() {
        let (_dir, repo) = repo();
        // Names chosen to exercise git's order: "a" (folder) sorts after "a.b" and before "a0".
        let files: Vec<(&str, &[u8])> = vec![
            ("a/x", b"1"),
            ("a.b", b"2"),
            ("a0", b"3"),
            ("b/c/d.yaml", b"4"),
            ("b/c.yaml", b"5"),
        ];
        let expected = libgit2_tree(&repo, &files);
        let staging = Staging::default();
        let objects = Objects {
            repo: &repo,
            staged: &staging,
            cache: None,
        };
        let edits: Vec<Edit> = files
            .iter()
            .map(|(p, c)| Edit::Write {
                path: (*p).into(),
                contents: c.to_vec(),
            })
            .collect();
        let (tree, _) = edit_tree(&objects, None, &edits).unwrap();
        assert_eq!(tree, expected);

        let author = Signature::new(
            "Ada",
            "ada@example.com",
            &git2::Time::new(1_700_000_000, 90),
        )
        .unwrap();
        let committer = Signature::new(
            "api",
            "api@example.com",
            &git2::Time::new(1_700_000_001, -330),
        )
        .unwrap();
        let git_tree = repo.find_tree(expected).unwrap();
        let buffer = repo
            .commit_create_buffer(&author, &committer, "subject\n\nbody\n", &git_tree, &[])
            .unwrap();
        assert_eq!(
            commit_object(tree, &[], &author, &committer, "subject\n\nbody\n"),
            &buffer[..]
        );
    }

    #[test]
    fn object_ids_are_the_ones_git_gives() {
        for (kind, data) in [
            (ObjectType::Blob, &b""[..]),
            (ObjectType::Blob, &b"hello\n"[..]),
            (ObjectType::Tree, &b"100644 a\0aaaaaaaaaaaaaaaaaaaa"[..]),
            (
                ObjectType::Commit,
                &b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nm"[..],
            ),
        ] {
            assert_eq!(
                object_id(kind, data).unwrap(),
                Oid::hash_object(kind, data).unwrap()
            );
        }
        assert!(object_id(ObjectType::Any, b"").is_err());
    }

    #[test]
    fn edits_read_through_staged_and_stored_trees() {
        let (_dir, repo) = repo();
        let base = libgit2_tree(&repo, &[("keep/a", b"a"), ("gone/b", b"b"), ("f", b"f")]);
        let empty = Staging::default();
        let objects = Objects {
            repo: &repo,
            staged: &empty,
            cache: None,
        };
        let (tree, staged) = edit_tree(
            &objects,
            Some(base),
            &[
                Edit::Remove {
                    path: "gone/b".into(),
                },
                Edit::Write {
                    path: "keep/a".into(),
                    contents: b"a".to_vec(),
                },
                Edit::Write {
                    path: "new/c".into(),
                    contents: b"c".to_vec(),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            tree,
            libgit2_tree(&repo, &[("keep/a", b"a"), ("new/c", b"c"), ("f", b"f")])
        );
        // Unchanged keep/ and its blob are not staged again; new/, its blob and the root are.
        assert_eq!(staged.iter().count(), 3);
        let objects = Objects {
            repo: &repo,
            staged: &staged,
            cache: None,
        };
        assert_eq!(&objects.file(tree, "new/c").unwrap().unwrap()[..], b"c");
        assert_eq!(&objects.file(tree, "keep/a").unwrap().unwrap()[..], b"a");
        assert!(objects.file(tree, "gone/b").unwrap().is_none());
        assert!(
            objects.file(tree, "new").unwrap().is_none(),
            "a folder is not a file"
        );
        assert!(
            objects.entry(tree, "gone").unwrap().is_none(),
            "an emptied folder goes"
        );

        // Removing everything leaves the empty tree.
        let (emptied, _) = edit_tree(
            &objects,
            Some(tree),
            &[
                Edit::Remove {
                    path: "keep".into(),
                },
                Edit::Remove { path: "new".into() },
                Edit::Remove { path: "f".into() },
            ],
        )
        .unwrap();
        assert_eq!(emptied, repo.treebuilder(None).unwrap().write().unwrap());
    }
}
