//! Pack files: the objects of a batch go to disk as one pack (version 2, no deltas) with its
//! index (version 2), written here rather than by libgit2 so that what is flushed to disk, and
//! when, is decided in one place:
//!
//! 1. the pack and its index are written to temporary files in `objects/pack/` and fsynced (the
//!    two flushes run at the same time);
//! 2. they are renamed to `pack-<checksum>.idx` and `.pack`, the index first, and a pack is
//!    removed pack first ([`remove`]): a reader listing the folder never finds a `.pack` without
//!    its `.idx` (a local `git clone` copies what it lists). It may find an index without its
//!    pack, which git and libgit2 skip when they list the folder (they look for the pack beside
//!    each index) and find on the listing they make again when an object is missing;
//! 3. the folder is fsynced, so the names survive a power loss too.
//!
//! A repository on the same filesystem (the remote of a local state repo) gets the same files as
//! hard links: the data is written and flushed once, and only that folder needs an fsync.
//!
//! Packs written here hold whole objects only, so several of them can be rolled into one by
//! copying their entries as they are ([`merge`]): no object is inflated, hashed or searched for
//! deltas again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};
use sha1::Digest;

/// A pack written to a repository's `objects/pack/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackName(pub String);

impl PackName {
    fn file(&self, ext: &str) -> String {
        format!("{}.{ext}", self.0)
    }
}

/// Writes `objects` as one pack with its index into `pack_dir` and flushes both and the folder to
/// disk before returning.
pub fn write<'a>(
    pack_dir: &Path,
    objects: impl Iterator<Item = (Oid, ObjectType, &'a [u8])>,
) -> std::io::Result<PackName> {
    let (pack, index) = encode(objects)?;
    store(pack_dir, &pack, &index)
}

/// [`write`], and then [`link`] into `also` (another repository's `objects/pack/`) while the
/// first folder is flushed. Returns the pack's name and whether the link succeeded (when it did
/// not, the pack is in `pack_dir` all the same, flushed, and the error is the link's).
pub fn write_and_link<'a>(
    pack_dir: &Path,
    also: &Path,
    objects: impl Iterator<Item = (Oid, ObjectType, &'a [u8])>,
) -> std::io::Result<(PackName, std::io::Result<()>)> {
    let (pack, index) = encode(objects)?;
    let name = write_files(pack_dir, &pack, &index)?;
    let (synced, linked) = std::thread::scope(|scope| {
        let linker = scope.spawn(|| link(pack_dir, std::slice::from_ref(&name), also));
        let synced = sync_dir(pack_dir);
        let linked = linker
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("linking the pack panicked")));
        (synced, linked)
    });
    synced?;
    Ok((name, linked))
}

/// Stores a pack and its index under their checksum's name, flushed with the folder.
fn store(pack_dir: &Path, pack: &[u8], index: &[u8]) -> std::io::Result<PackName> {
    let name = write_files(pack_dir, pack, index)?;
    sync_dir(pack_dir)?;
    Ok(name)
}

/// Writes a pack and its index, flushed, under their checksum's name; the folder is not flushed.
fn write_files(pack_dir: &Path, pack: &[u8], index: &[u8]) -> std::io::Result<PackName> {
    let checksum = &pack[pack.len() - 20..];
    let name = PackName(format!("pack-{}", hex::encode(checksum)));
    // Both files are flushed at once: two flushes in flight cost about one on most disks.
    let (pack_tmp, index_tmp) = std::thread::scope(|scope| {
        let index_writer = scope.spawn(|| write_temporary(pack_dir, "tmp_idx_", index));
        let pack_tmp = write_temporary(pack_dir, "tmp_pack_", pack);
        let index_tmp = index_writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the index writer panicked")));
        (pack_tmp, index_tmp)
    });
    let (pack_tmp, index_tmp) = match (pack_tmp, index_tmp) {
        (Ok(p), Ok(i)) => (p, i),
        (p, i) => {
            for path in [p.as_ref().ok(), i.as_ref().ok()].into_iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
            return Err(p.err().or(i.err()).expect("one of them failed"));
        }
    };
    let renamed = std::fs::rename(&index_tmp, pack_dir.join(name.file("idx")))
        .and_then(|()| std::fs::rename(&pack_tmp, pack_dir.join(name.file("pack"))));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&pack_tmp);
        let _ = std::fs::remove_file(&index_tmp);
        return Err(e);
    }
    Ok(name)
}

/// Rolls the packs `names` of `pack_dir` (written by [`write`] or [`merge`]: whole objects, no
/// deltas) into one new pack, flushed with its index and the folder, and returns its name. The
/// inputs are left in place; an input that is gone (rolled up by `git repack` meanwhile, which
/// keeps its objects elsewhere) is skipped. Objects in several inputs are kept once.
pub fn merge(pack_dir: &Path, names: &[PackName]) -> std::io::Result<Option<PackName>> {
    let mut pack = pack_header();
    let mut entries: Vec<(Oid, u64, u32)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let (data, index) = match (
            std::fs::read(pack_dir.join(name.file("pack"))),
            std::fs::read(pack_dir.join(name.file("idx"))),
        ) {
            (Ok(data), Ok(index)) => (data, index),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let mut objects = read_index(&index, &name.0)?;
        objects.sort_by_key(|o| o.1);
        let end_of_entries = data
            .len()
            .checked_sub(20)
            .ok_or_else(|| corrupt(&name.0, "too short"))?;
        for (i, (id, offset, crc)) in objects.iter().enumerate() {
            let end = objects
                .get(i + 1)
                .map_or(end_of_entries as u64, |next| next.1);
            let entry = data
                .get(*offset as usize..end as usize)
                .ok_or_else(|| corrupt(&name.0, "an offset is out of range"))?;
            // Only whole objects (types 1 to 4) can move to another offset unchanged.
            if !(1..=4).contains(&((entry.first().copied().unwrap_or(0) >> 4) & 7)) {
                return Err(corrupt(
                    &name.0,
                    "holds a delta; only whole objects are rolled up",
                ));
            }
            if seen.insert(*id) {
                entries.push((*id, pack.len() as u64, *crc));
                pack.extend_from_slice(entry);
            }
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let index = finish(&mut pack, entries)?;
    store(pack_dir, &pack, &index).map(Some)
}

/// Removes pack `name` from `pack_dir`, the pack before its index (see the module's doc: no
/// reader may list a pack without its index); absent files are fine.
pub fn remove(pack_dir: &Path, name: &PackName) -> std::io::Result<()> {
    for ext in ["pack", "rev", "idx"] {
        match std::fs::remove_file(pack_dir.join(name.file(ext))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn corrupt(name: &str, what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{name}: {what}"))
}

/// The (id, offset, crc32) of every object of a version 2 index.
fn read_index(index: &[u8], name: &str) -> std::io::Result<Vec<(Oid, u64, u32)>> {
    if index.len() < 8 + 1024 + 40 || index[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(corrupt(name, "not a version 2 pack index"));
    }
    let count =
        u32::from_be_bytes(index[8 + 255 * 4..8 + 256 * 4].try_into().expect("4 bytes")) as usize;
    let ids = 8 + 1024;
    let crcs = ids + count * 20;
    let offsets = crcs + count * 4;
    if index.len() < offsets + count * 4 + 40 {
        return Err(corrupt(name, "index is too short"));
    }
    let word = |at: usize| u32::from_be_bytes(index[at..at + 4].try_into().expect("4 bytes"));
    (0..count)
        .map(|i| {
            let offset = word(offsets + i * 4);
            if offset & 0x8000_0000 != 0 {
                return Err(corrupt(name, "large offsets are not written here"));
            }
            let id = Oid::from_bytes(&index[ids + i * 20..ids + i * 20 + 20])
                .map_err(|e| corrupt(name, e.message()))?;
            Ok((id, u64::from(offset), word(crcs + i * 4)))
        })
        .collect()
}

/// Puts the packs `names` of `from` (a `objects/pack/` folder) into `to` as well: hard links when
/// both are on one filesystem, else copies flushed to disk. Then flushes `to` once.
pub fn link(from: &Path, names: &[PackName], to: &Path) -> std::io::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    for name in names {
        // The index first, as in `write_files`.
        for ext in ["idx", "pack"] {
            let source = from.join(name.file(ext));
            let target = to.join(name.file(ext));
            match std::fs::hard_link(&source, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(_) => {
                    let data = std::fs::read(&source)?;
                    let tmp = write_temporary(to, "tmp_pack_", &data)?;
                    if let Err(e) = std::fs::rename(&tmp, &target) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                }
            }
        }
    }
    sync_dir(to)
}

/// How many packs `pack_dir` holds (its `*.pack` files; temporary files are not counted).
pub fn count(pack_dir: &Path) -> std::io::Result<usize> {
    let mut packs = 0;
    for entry in std::fs::read_dir(pack_dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("pack-") && name.ends_with(".pack") {
            packs += 1;
        }
    }
    Ok(packs)
}

/// Flushes a folder's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How much of a file is written between two flushes. Each flush of a chunk occupies the disk
/// while the changes being committed meanwhile wait for theirs: with 4 MiB chunks, rolling up a
/// 37 MiB pack held theirs up by tens of milliseconds (docs/BENCHMARKS.md, api, 2026-12-04).
const FLUSH_CHUNK: usize = 256 << 10;

/// Writes `data` to a new file in `dir` and flushes it; returns its path.
fn write_temporary(dir: &Path, prefix: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    loop {
        let path = dir.join(format!(
            "{prefix}{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        // A large file (a rolled-up pack) is flushed a chunk at a time, so that the flushes of
        // the changes being written meanwhile never wait behind all of it.
        let written = data
            .chunks(FLUSH_CHUNK)
            .try_for_each(|chunk| file.write_all(chunk).and_then(|()| file.sync_data()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        return Ok(path);
    }
}

fn pack_header() -> Vec<u8> {
    let mut pack = Vec::new();
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&0u32.to_be_bytes()); // the count, filled in by `finish`
    pack
}

/// The pack and its index, in memory.
fn encode<'a>(
    objects: impl Iterator<Item = (Oid, ObjectType, &'a [u8])>,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut pack = pack_header();
    // (id, offset, crc32 of the entry as stored)
    let mut entries: Vec<(Oid, u64, u32)> = Vec::new();
    // One compressor for the whole pack: making one costs more than compressing a small object.
    let mut compressor = flate2::Compress::new(flate2::Compression::fast(), true);
    for (id, kind, data) in objects {
        let code: u8 = match kind {
            ObjectType::Commit => 1,
            ObjectType::Tree => 2,
            ObjectType::Blob => 3,
            ObjectType::Tag => 4,
            _ => {
                return Err(std::io::Error::other(format!(
                    "object {id} has no pack type"
                )))
            }
        };
        let offset = pack.len() as u64;
        let mut size = data.len();
        let mut byte = (code << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        compressor.reset();
        pack.reserve(data.len() / 2 + 64);
        loop {
            let consumed = compressor.total_in() as usize;
            let status = compressor
                .compress_vec(&data[consumed..], &mut pack, flate2::FlushCompress::Finish)
                .map_err(std::io::Error::other)?;
            if status == flate2::Status::StreamEnd {
                break;
            }
            pack.reserve(pack.capacity().max(4096));
        }
        let crc = crc32fast::hash(&pack[offset as usize..]);
        entries.push((id, offset, crc));
    }
    let index = finish(&mut pack, entries)?;
    Ok((pack, index))
}

/// Completes `pack` (its object count and checksum) and returns its index.
fn finish(pack: &mut Vec<u8>, mut entries: Vec<(Oid, u64, u32)>) -> std::io::Result<Vec<u8>> {
    if pack.len() as u64 >= 1 << 31 {
        return Err(std::io::Error::other(
            "a batch of changes is too large for one pack",
        ));
    }
    let count = u32::try_from(entries.len())
        .map_err(|_| std::io::Error::other("too many objects for one pack"))?;
    pack[8..12].copy_from_slice(&count.to_be_bytes());
    let checksum = sha1::Sha1::digest(&pack[..]);
    pack.extend_from_slice(&checksum);

    entries.sort_by_key(|e| e.0);
    let mut index = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    index.extend_from_slice(&[0xff, b't', b'O', b'c']);
    index.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for (id, _, _) in &entries {
        fanout[id.as_bytes()[0] as usize] += 1;
    }
    let mut total = 0u32;
    for slot in fanout.iter_mut() {
        total += *slot;
        *slot = total;
    }
    for n in fanout {
        index.extend_from_slice(&n.to_be_bytes());
    }
    for (id, _, _) in &entries {
        index.extend_from_slice(id.as_bytes());
    }
    for (_, _, crc) in &entries {
        index.extend_from_slice(&crc.to_be_bytes());
    }
    for (_, offset, _) in &entries {
        index.extend_from_slice(&(*offset as u32).to_be_bytes());
    }
    index.extend_from_slice(&checksum);
    let index_checksum = sha1::Sha1::digest(&index);
    index.extend_from_slice(&index_checksum);
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_reads_what_is_written_and_its_index_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let objects: Vec<(ObjectType, Vec<u8>)> = vec![
            (ObjectType::Blob, b"hello\n".to_vec()),
            (ObjectType::Blob, big),
            (ObjectType::Blob, Vec::new()),
        ];
        let ids: Vec<Oid> = objects
            .iter()
            .map(|(k, d)| Oid::hash_object(*k, d).unwrap())
            .collect();
        let pack_dir = dir.path().join("objects/pack");
        let name = write(
            &pack_dir,
            ids.iter()
                .zip(&objects)
                .map(|(id, (k, d))| (*id, *k, d.as_slice())),
        )
        .unwrap();
        for (id, (_, data)) in ids.iter().zip(&objects) {
            assert_eq!(repo.find_blob(*id).unwrap().content(), data.as_slice());
        }
        let leftovers: Vec<_> = std::fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("tmp_"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // A second repository gets the same pack.
        let other_dir = tempfile::tempdir().unwrap();
        let other = git2::Repository::init_bare(other_dir.path()).unwrap();
        link(
            &pack_dir,
            std::slice::from_ref(&name),
            &other_dir.path().join("objects/pack"),
        )
        .unwrap();
        assert_eq!(other.find_blob(ids[0]).unwrap().content(), b"hello\n");

        verify_with_git(&pack_dir, &name);
    }

    /// git's own checker agrees (required under CI=true, skipped without git otherwise).
    fn verify_with_git(pack_dir: &Path, name: &PackName) {
        let verified = std::process::Command::new("git")
            .arg("verify-pack")
            .arg(pack_dir.join(format!("{}.idx", name.0)))
            .output();
        match verified {
            Ok(out) => assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("git is needed for this test under CI=true: {e}")
            }
            Err(e) => eprintln!("skipping git verify-pack: {e}"),
        }
    }

    #[test]
    fn packs_roll_up_into_one_that_holds_every_object_once() {
        let dir = tempfile::tempdir().unwrap();
        let pack_dir = dir.path().join("objects/pack");
        git2::Repository::init_bare(dir.path()).unwrap();
        let mut names = Vec::new();
        let mut ids = Vec::new();
        for n in 0..5u32 {
            // Each pack holds its own blobs and one blob every pack has.
            let blobs: Vec<Vec<u8>> = vec![
                format!("blob {n}\n").into_bytes(),
                (0..20_000u32).flat_map(|i| (i * n).to_le_bytes()).collect(),
                b"shared\n".to_vec(),
            ];
            let objects: Vec<(Oid, ObjectType, Vec<u8>)> = blobs
                .into_iter()
                .map(|b| {
                    (
                        Oid::hash_object(ObjectType::Blob, &b).unwrap(),
                        ObjectType::Blob,
                        b,
                    )
                })
                .collect();
            ids.extend(objects.iter().map(|(id, _, d)| (*id, d.clone())));
            names.push(
                write(
                    &pack_dir,
                    objects.iter().map(|(id, k, d)| (*id, *k, d.as_slice())),
                )
                .unwrap(),
            );
        }
        // An input already gone (rolled up by git meanwhile) is skipped.
        remove(&pack_dir, &names[4]).unwrap();
        let merged = merge(&pack_dir, &names).unwrap().unwrap();
        for name in &names {
            remove(&pack_dir, name).unwrap();
        }
        let packs: Vec<String> = std::fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(packs.len(), 2, "{packs:?}");
        let index = std::fs::read(pack_dir.join(format!("{}.idx", merged.0))).unwrap();
        assert_eq!(read_index(&index, "merged").unwrap().len(), 4 * 2 + 1);
        let repo = git2::Repository::open_bare(dir.path()).unwrap();
        for (id, data) in ids.iter().take(4 * 3) {
            assert_eq!(repo.find_blob(*id).unwrap().content(), data.as_slice());
        }
        verify_with_git(&pack_dir, &merged);
        // Rolled-up packs roll up again.
        let again = merge(&pack_dir, std::slice::from_ref(&merged))
            .unwrap()
            .unwrap();
        assert_eq!(again, merged, "the same objects make the same pack");
    }
}
