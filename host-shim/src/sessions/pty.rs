//! An agent in a PTY (portable-pty): its output appended to the session's spool file by a
//! reader thread, its input written by a writer thread, its exit awaited by a third.
//!
//! The spool is the durable record of what the PTY produced: every byte read is written to
//! the file before anyone is told about it, so a shipper that dies, or a daemon that restarts,
//! resumes from the file. The reader stops reading (and so, through the PTY's own buffer,
//! pauses the agent) while more than [`MAX_UNSHIPPED`] bytes wait to be shipped.

use portable_pty::{Child, ChildKiller, CommandBuilder, MasterPty, PtySize, native_pty_system};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Spooled bytes not yet acknowledged by the stream, past which the agent is paused.
pub const MAX_UNSHIPPED: u64 = 64 * 1024 * 1024;
/// One read from the PTY.
const READ_BUF: usize = 64 * 1024;
/// Keystrokes waiting for the writer thread.
const INPUT_QUEUE: usize = 256;

/// How an agent ended: its exit code and, when a signal ended it, the signal's name.
pub type Exit = (i64, Option<String>);

/// What to run.
pub struct Spawn<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub cols: u16,
    pub rows: u16,
    pub spool: &'a Path,
}

/// A running agent.
pub struct Agent {
    master: Mutex<Box<dyn MasterPty + Send>>,
    killer: Mutex<Box<dyn ChildKiller + Send + Sync>>,
    pid: Option<u32>,
    input: mpsc::Sender<Vec<u8>>,
    /// The spool's length, as the reader writes it.
    pub spooled: watch::Receiver<u64>,
    /// The reader has seen the end of the output (the PTY closed).
    pub output_done: watch::Receiver<bool>,
    /// How the agent exited (taken once, by whoever waits for it).
    pub exited: Mutex<Option<oneshot::Receiver<Exit>>>,
}

impl Agent {
    /// Starts `spawn.program` in a new PTY. The spool file is created (or appended to).
    pub fn spawn(spawn: &Spawn<'_>, shipped: watch::Receiver<u64>) -> std::io::Result<Arc<Self>> {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: spawn.rows,
                cols: spawn.cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(std::io::Error::other)?;
        let mut cmd = CommandBuilder::new(spawn.program);
        cmd.args(spawn.args);
        cmd.cwd(spawn.cwd);
        for (k, v) in spawn.env {
            cmd.env(k, v);
        }
        let mut child = pty
            .slave
            .spawn_command(cmd)
            .map_err(std::io::Error::other)?;
        // The agent holds the only slave: when it (and its children) exit, reads end.
        drop(pty.slave);
        let reader = pty
            .master
            .try_clone_reader()
            .map_err(std::io::Error::other)?;
        let writer = pty.master.take_writer().map_err(std::io::Error::other)?;
        let spool = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spawn.spool)?;
        let start = spool.metadata()?.len();
        let (spooled_tx, spooled) = watch::channel(start);
        let (done_tx, output_done) = watch::channel(false);
        let (exit_tx, exit_rx) = oneshot::channel();
        let (input, input_rx) = mpsc::channel(INPUT_QUEUE);
        let killer = child.clone_killer();
        let pid = child.process_id();
        let spool_path = spawn.spool.to_owned();
        std::thread::Builder::new()
            .name("pty-reader".into())
            .spawn(move || {
                read_loop(
                    reader,
                    spool,
                    spool_path,
                    start,
                    &spooled_tx,
                    shipped,
                    &done_tx,
                )
            })?;
        std::thread::Builder::new()
            .name("pty-writer".into())
            .spawn(move || write_loop(writer, input_rx))?;
        std::thread::Builder::new()
            .name("pty-wait".into())
            .spawn(move || {
                let _ = exit_tx.send(wait(&mut *child));
            })?;
        Ok(Arc::new(Self {
            master: Mutex::new(pty.master),
            killer: Mutex::new(killer),
            pid,
            input,
            spooled,
            output_done,
            exited: Mutex::new(Some(exit_rx)),
        }))
    }

    /// Queues keystrokes for the agent. False when the input queue is full or closed.
    pub fn write(&self, bytes: Vec<u8>) -> bool {
        self.input.try_send(bytes).is_ok()
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        let master = self
            .master
            .lock()
            .map_err(|_| std::io::Error::other("the PTY lock is poisoned"))?;
        master
            .resize(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(std::io::Error::other)
    }

    /// Asks the agent to end: SIGTERM to its process group (the PTY made it a session leader,
    /// so the group is everything it started in the terminal).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let group = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        }
    }

    /// Ends the agent for sure: SIGKILL to its group (portable-pty's kill as the fallback).
    pub fn kill(&self) {
        if let Some(pid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            let group = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        if let Ok(mut killer) = self.killer.lock() {
            let _ = killer.kill();
        }
    }
}

fn wait(child: &mut (dyn Child + Send + Sync)) -> Exit {
    match child.wait() {
        Ok(status) => (
            i64::from(status.exit_code()),
            status.signal().map(str::to_owned),
        ),
        Err(e) => (-1, Some(e.to_string())),
    }
}

fn read_loop(
    mut reader: Box<dyn Read + Send>,
    mut spool: std::fs::File,
    spool_path: PathBuf,
    mut len: u64,
    spooled: &watch::Sender<u64>,
    shipped: watch::Receiver<u64>,
    done: &watch::Sender<bool>,
) {
    let mut buf = vec![0u8; READ_BUF];
    let mut last_sync = std::time::Instant::now();
    loop {
        // Backpressure: while too much waits to be shipped, leave the bytes in the PTY.
        while len.saturating_sub(*shipped.borrow()) > MAX_UNSHIPPED {
            if shipped.has_changed().is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: the slave side closed (the agent and everything it started are gone).
            Err(_) => break,
        };
        let Some(chunk) = buf.get(..n) else { break };
        if let Err(e) = spool.write_all(chunk) {
            tracing::error!(spool = %spool_path.display(), error = %e, "writing the spool failed; output is being lost");
            break;
        }
        len += n as u64;
        spooled.send_replace(len);
        // The page cache survives a daemon crash; a machine crash loses at most a second.
        if last_sync.elapsed() >= Duration::from_secs(1) {
            let _ = spool.sync_data();
            last_sync = std::time::Instant::now();
        }
    }
    let _ = spool.sync_data();
    done.send_replace(true);
}

fn write_loop(mut writer: Box<dyn Write + Send>, mut input: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = input.blocking_recv() {
        if writer
            .write_all(&bytes)
            .and_then(|()| writer.flush())
            .is_err()
        {
            break;
        }
    }
}
