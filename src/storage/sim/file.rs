//! [`SimFile`]: a handle on a simulated file, implementing [`StorageFile`]
//! over the shared state of its [`SimFs`]: appends and truncates change the
//! live image, `sync_data` commits it (or, under a fault, forgets the dirty
//! bytes).
//!
//! Limits: none beyond memory (tests only).
//! Must never: work after the crash that killed the process holding it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::inode::Ino;
#[cfg(doc)]
use super::SimFs;
use super::{invalid, lock, Fault, Op, State};
use crate::storage::StorageFile;

/// A handle on a [`SimFs`] file. It dies with the simulated process: after
/// [`SimFs::crash`] every operation on it fails.
pub struct SimFile {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) ino: Ino,
    pub(super) generation: u64,
    pub(super) path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("generation", &self.generation)
            .finish()
    }
}

impl SimFile {
    /// Locks the state and checks the handle survived every crash.
    fn live_state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.generation != self.generation {
            return Err(io::Error::other(format!(
                "{}: handle opened before a simulated crash",
                self.path.display()
            )));
        }
        Ok(st)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        // Never panic in drop, even if another thread poisoned the mutex.
        let mut st = match self.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.generation != self.generation {
            return;
        }
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            inode.open_handles = inode.open_handles.saturating_sub(1);
        }
        st.collect_garbage();
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut st = self.live_state()?;
        Ok(st.inode_mut(self.ino)?.live.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.live_state()?;
        let live = &st.inode_mut(self.ino)?.live;
        let Some(start) = usize::try_from(offset).ok().filter(|&s| s < live.len()) else {
            return Ok(0);
        };
        let n = buf.len().min(live.len() - start);
        buf[..n].copy_from_slice(&live[start..start + n]);
        Ok(n)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.live_state()?;
        let fault = st.tick(Op::Append);
        let inode = st.inode_mut(self.ino)?;
        match fault {
            Some(fault @ Fault::FailAppend { keep, .. }) => {
                inode.live.extend_from_slice(&buf[..keep.min(buf.len())]);
                Err(fault.error())
            }
            Some(fault) => Err(fault.error()),
            None => {
                inode.live.extend_from_slice(buf);
                Ok(())
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.live_state()?;
        st.syncs += 1;
        let fault = st.tick(Op::SyncData);
        let inode = st.inode_mut(self.ino)?;
        match fault {
            Some(fault) => {
                inode.drop_dirty();
                Err(fault.error())
            }
            None => {
                inode.commit();
                Ok(())
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.live_state()?;
        let len = usize::try_from(len).map_err(|_| invalid(&self.path, "length too large"))?;
        let inode = st.inode_mut(self.ino)?;
        if len != inode.live.len() {
            inode.rewritten = true;
            inode.live.resize(len, 0);
            inode.clip_lost();
        }
        Ok(())
    }
}
