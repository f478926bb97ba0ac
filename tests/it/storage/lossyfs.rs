//! `lossyfs`: an in-memory FUSE filesystem that models what a power cut
//! keeps. Every write lands in memory at once (as in the page cache), but only
//! what was made durable survives [`LossyFs::cut`]: a file's data as of its
//! last `fsync`/`fdatasync`, and a directory's names as of its last directory
//! `fsync` (POSIX: a new, renamed or removed name is durable only then). So a
//! cut loses exactly what the kernel had not been asked to make durable —
//! what kill -9 alone never loses.
//!
//! It also injects faults on command ([`Faults`]): ENOSPC or EROFS on every
//! change, EIO on reading files whose path contains a marker, and a capacity
//! (ENOSPC past it).
//!
//! Files are served with direct I/O and no attribute or entry caching, so the
//! kernel keeps no copy that a cut would leave stale. Mounted with the `fuser`
//! crate's pure-Rust mount (needs root and /dev/fuse).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE: usize = 4096;
const TTL: Duration = Duration::ZERO;

/// Faults to inject, changed by the test while the filesystem is mounted.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Every write, create, truncate, rename and removal fails with ENOSPC.
    pub enospc: bool,
    /// Every change fails with EROFS (a volume remounted read-only).
    pub read_only: bool,
    /// Reads of files whose path contains this fail with EIO.
    pub eio_read: Option<String>,
    /// Bytes the files may hold in total; ENOSPC past it (None = unlimited).
    pub capacity: Option<u64>,
}

/// What a cut dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct CutReport {
    /// Files whose content went back to their last sync.
    pub files_rolled_back: usize,
    /// Bytes of file content that differed from the durable state.
    pub bytes_lost: u64,
    /// Directories whose names went back to their last sync.
    pub dirs_rolled_back: usize,
}

enum Kind {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
        /// Pages written since the last sync (and whether the size changed).
        dirty: BTreeSet<usize>,
        resized: bool,
    },
    Dir {
        names: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

struct Node {
    kind: Kind,
    mode: u16,
    /// The name it was created under, for `Faults::eio_read`.
    path: String,
}

struct State {
    nodes: HashMap<u64, Node>,
    next: u64,
    faults: Faults,
}

/// The filesystem; clone the handle to control it while mounted.
#[derive(Clone)]
pub struct LossyFs(Arc<Mutex<State>>);

/// A mounted [`LossyFs`]; unmounted on drop.
pub struct Mounted {
    pub fs: LossyFs,
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

impl LossyFs {
    /// Mounts a fresh, empty filesystem on `dir`.
    pub fn mount(dir: &Path) -> std::io::Result<Mounted> {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                kind: Kind::Dir {
                    names: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                mode: 0o755,
                path: String::new(),
            },
        );
        let fs = LossyFs(Arc::new(Mutex::new(State {
            nodes,
            next: 2,
            faults: Faults::default(),
        })));
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("lossyfs".into()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount(fs.clone(), dir, &config)?;
        Ok(Mounted {
            fs,
            session: Some(session),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// The power cut: every file and directory goes back to what was last
    /// made durable. (Call it only while nothing uses the filesystem, i.e.
    /// after the writer was killed.)
    pub fn cut(&self) -> CutReport {
        let mut st = self.state();
        let mut report = CutReport::default();
        for node in st.nodes.values_mut() {
            match &mut node.kind {
                Kind::File {
                    data,
                    durable,
                    dirty,
                    resized,
                } => {
                    if !dirty.is_empty() || *resized {
                        report.files_rolled_back += 1;
                        let lost = dirty.len() as u64 * PAGE as u64;
                        report.bytes_lost += lost.min(data.len() as u64);
                        *data = durable.clone();
                        dirty.clear();
                        *resized = false;
                    }
                }
                Kind::Dir { names, durable } => {
                    if names != durable {
                        report.dirs_rolled_back += 1;
                        *names = durable.clone();
                    }
                }
            }
        }
        report
    }
}

fn attr(ino: u64, node: &Node) -> FileAttr {
    let (kind, size, nlink) = match &node.kind {
        Kind::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
        Kind::Dir { .. } => (FileType::Directory, 0, 2),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: SystemTime::now(),
        ctime: SystemTime::now(),
        crtime: UNIX_EPOCH,
        kind,
        perm: node.mode,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

impl State {
    fn used(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                Kind::File { data, .. } => data.len() as u64,
                Kind::Dir { .. } => 0,
            })
            .sum()
    }

    /// The error a change gets now, if any; `grow` bytes more would be used.
    fn refuse(&self, grow: u64) -> Option<Errno> {
        if self.faults.read_only {
            return Some(Errno::EROFS);
        }
        if self.faults.enospc {
            return Some(Errno::ENOSPC);
        }
        match self.faults.capacity {
            Some(cap) if grow > 0 && self.used() + grow > cap => Some(Errno::ENOSPC),
            _ => None,
        }
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::Dir { names, .. }) => Ok(names),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn create(&mut self, parent: u64, name: &OsStr, mode: u32, dir: bool) -> Result<u64, Errno> {
        if let Some(e) = self.refuse(0) {
            return Err(e);
        }
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let path = format!(
            "{}/{}",
            self.nodes
                .get(&parent)
                .map(|n| n.path.as_str())
                .unwrap_or(""),
            name.to_string_lossy()
        );
        let kind = if dir {
            Kind::Dir {
                names: BTreeMap::new(),
                durable: BTreeMap::new(),
            }
        } else {
            Kind::File {
                data: Vec::new(),
                durable: Vec::new(),
                dirty: BTreeSet::new(),
                resized: true,
            }
        };
        let mode = (mode & 0o7777) as u16;
        self.nodes.insert(ino, Node { kind, mode, path });
        self.dir(parent)?.insert(name.to_os_string(), ino);
        Ok(ino)
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            Some(Kind::File {
                data,
                durable,
                dirty,
                resized,
            }) => {
                durable.resize(data.len(), 0);
                for p in std::mem::take(dirty) {
                    let (a, b) = (p * PAGE, ((p + 1) * PAGE).min(data.len()));
                    if a < b {
                        durable[a..b].copy_from_slice(&data[a..b]);
                    }
                }
                *resized = false;
                Ok(())
            }
            Some(Kind::Dir { names, durable }) => {
                *durable = names.clone();
                Ok(())
            }
            None => Err(Errno::ENOENT),
        }
    }
}

fn mark(dirty: &mut BTreeSet<usize>, from: usize, to: usize) {
    if to > from {
        dirty.extend(from / PAGE..=(to - 1) / PAGE);
    }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.state();
        match st.child(parent.0, name) {
            Ok(ino) => match st.nodes.get(&ino) {
                Some(n) => reply.entry(&TTL, &attr(ino, n), Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        let st = self.state();
        match st.nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _: Option<u32>,
        _: Option<u32>,
        size: Option<u64>,
        _: Option<TimeOrNow>,
        _: Option<TimeOrNow>,
        _: Option<SystemTime>,
        _: Option<FileHandle>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.state();
        if let Some(size) = size {
            let grow = st.nodes.get(&ino.0).map_or(0, |n| match &n.kind {
                Kind::File { data, .. } => size.saturating_sub(data.len() as u64),
                Kind::Dir { .. } => 0,
            });
            if let Some(e) = st.refuse(grow) {
                return reply.error(e);
            }
        }
        let Some(node) = st.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            node.mode = (m & 0o7777) as u16;
        }
        if let (
            Some(size),
            Kind::File {
                data,
                resized,
                dirty,
                ..
            },
        ) = (size, &mut node.kind)
        {
            let old = data.len();
            data.resize(size as usize, 0);
            mark(dirty, old.min(size as usize), old.max(size as usize));
            *resized = true;
        }
        reply.attr(&TTL, &attr(ino.0, node));
    }

    fn mkdir(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.state();
        match st.create(parent.0, name, mode, true) {
            Ok(ino) => reply.entry(&TTL, &attr(ino, &st.nodes[&ino]), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _: u32,
        _: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.state();
        match st.create(parent.0, name, mode, false) {
            Ok(ino) => reply.created(
                &TTL,
                &attr(ino, &st.nodes[&ino]),
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply)
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply)
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        if let Some(e) = st.refuse(0) {
            return reply.error(e);
        }
        let ino = match st.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = st.dir(newparent.0) {
            return reply.error(e);
        }
        if let Ok(names) = st.dir(parent.0) {
            names.remove(name);
        }
        if let Ok(names) = st.dir(newparent.0) {
            names.insert(newname.to_os_string(), ino);
        }
        reply.ok();
    }

    fn open(&self, _: &Request, ino: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        if self.state().nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = self.state();
        let Some(node) = st.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if st
            .faults
            .eio_read
            .as_ref()
            .is_some_and(|m| node.path.contains(m.as_str()))
        {
            return reply.error(Errno::EIO);
        }
        match &node.kind {
            Kind::File { data, .. } => {
                let a = (offset as usize).min(data.len());
                let b = (a + size as usize).min(data.len());
                reply.data(&data[a..b]);
            }
            Kind::Dir { .. } => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        bytes: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.state();
        let end = offset as usize + bytes.len();
        let grow = st.nodes.get(&ino.0).map_or(0, |n| match &n.kind {
            Kind::File { data, .. } => end.saturating_sub(data.len()) as u64,
            Kind::Dir { .. } => 0,
        });
        if let Some(e) = st.refuse(grow.max(1)) {
            return reply.error(e);
        }
        match st.nodes.get_mut(&ino.0).map(|n| &mut n.kind) {
            Some(Kind::File {
                data,
                dirty,
                resized,
                ..
            }) => {
                if end > data.len() {
                    data.resize(end, 0);
                    *resized = true;
                }
                data[offset as usize..end].copy_from_slice(bytes);
                mark(dirty, offset as usize, end);
                reply.written(bytes.len() as u32);
            }
            Some(Kind::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _: &Request, ino: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        let mut st = self.state();
        if st.faults.read_only {
            return reply.error(Errno::EROFS);
        }
        match st.sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _: &Request, ino: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        match self.state().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _: &Request, _: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.state();
        let names: Vec<(OsString, u64)> = match st.dir(ino.0) {
            Ok(n) => n.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(e) => return reply.error(e),
        };
        let mut all = vec![(OsString::from("."), ino.0), (OsString::from(".."), 1)];
        all.extend(names);
        for (i, (name, child)) in all.into_iter().enumerate().skip(offset as usize) {
            let kind = match st.nodes.get(&child).map(|n| &n.kind) {
                Some(Kind::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _: &Request, _: INodeNo, reply: ReplyStatfs) {
        let st = self.state();
        let total = st.faults.capacity.unwrap_or(1 << 40) / PAGE as u64;
        let used = st.used().div_ceil(PAGE as u64);
        let free = total.saturating_sub(used);
        reply.statfs(
            total,
            free,
            free,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }
}

impl LossyFs {
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.state();
        if let Some(e) = st.refuse(0) {
            return reply.error(e);
        }
        let ino = match st.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Some(Kind::Dir { names, .. }) = st.nodes.get(&ino).map(|n| &n.kind) {
            if !names.is_empty() {
                return reply.error(Errno::ENOTEMPTY);
            }
        }
        if let Ok(names) = st.dir(parent.0) {
            names.remove(name);
        }
        // The node stays: a cut may bring its name back, and open handles
        // keep reading it, as on a real filesystem.
        reply.ok();
    }
}
