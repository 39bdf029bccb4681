//! Call captures: everything one call's machine received and sent, as a
//! standard pcap file ([`pcap`]), with what is needed to run the machine
//! again from it ([`replay`]).
//!
//! A capture is taken at the machine's edge, not the wire's: SIP as pound
//! parsed it (over TCP and TLS too, decrypted, one message per UDP record),
//! RTP and SRTP datagrams as they came and went, and each input that is not
//! a datagram (a timer firing, a transaction timing out, a stop) as a small
//! JSON record from and to port 9 ("discard") of the node's SIP address. The
//! first record is the [`CaptureHeader`]: the call's configuration and the
//! seed of its RNG, so that the replayed call draws the same Call-ID, tags,
//! branches, SSRC and SRTP keys and the peer's captured answers fit it.
//!
//! A capture holds personal data and secrets of the call: the number, the
//! keys pressed, the number-matching code, the SRTP keys (in the SDP, and
//! derivable from the seed). It is written readable by its owner only. The
//! trunk's password and the STIR key are not in it.

pub mod pcap;
pub mod replay;
mod snapshot;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sip::{Message, TransactionKey};
pub use snapshot::CallSnapshot;

/// The format written; a reader refuses captures of another.
pub const FORMAT: u32 = 1;

/// The port control records go from and to (RFC 863, discard): Wireshark
/// shows them as data, and no SIP or RTP of a call uses it.
pub const CONTROL_PORT: u16 = 9;

/// The first record of every capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureHeader {
    /// [`FORMAT`].
    pub pound_capture: u32,
    /// The pound that wrote it (`pound --version`'s number).
    pub pound_version: String,
    /// The call's RNG seed, 64 hex digits.
    pub seed: String,
    /// When the call machine started, in Unix nanoseconds: every record's
    /// time counts from here.
    pub started_unix_ns: u64,
    pub call: CallSnapshot,
}

/// An input of the machine that is not a datagram, recorded when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Control {
    /// The machine's deadline came (`handle_timeout`).
    Timeout,
    /// The requester cancelled or the node stopped (`cancel`).
    Stop,
    /// Sending SIP failed, or the endpoint closed.
    TransportError { reason: String },
    /// A client transaction ended with no response (timer B or F) or could not send.
    Transaction { branch: String, method: String, event: TransactionEnd },
    /// The response in the next record came to the machine as a message,
    /// not through its transaction (none matched it).
    StrayResponse,
}

/// How a client transaction ended without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionEnd {
    Timeout,
    TransportError,
}

/// Where a call's capture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFile {
    pub path: PathBuf,
    /// The file stops growing at this many bytes (the call goes on; a replay
    /// of it runs the rest on the machine's own timers).
    pub max_bytes: Option<u64>,
}

/// Writes one call's capture as the call goes. A failure to write never
/// touches the call: it is logged once and the capture stops there.
pub struct Recorder {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    started: Instant,
    started_unix_ns: u64,
    written: u64,
    max_bytes: u64,
    local_sip: SocketAddr,
    local_rtp: SocketAddr,
    control: SocketAddr,
    cut: bool,
}

impl Recorder {
    /// Creates `file` (owner-only) and writes the pcap header and the
    /// capture's header, taken at `started`, the `now` the call starts with.
    pub fn create(
        file: &CaptureFile,
        started: Instant,
        seed: &[u8; 32],
        call: CallSnapshot,
    ) -> std::io::Result<Recorder> {
        let started_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let header = CaptureHeader {
            pound_capture: FORMAT,
            pound_version: env!("CARGO_PKG_VERSION").to_string(),
            seed: hex::encode(seed),
            started_unix_ns,
            call,
        };
        let (local_sip, local_rtp) = (header.call.local_sip, header.call.local_rtp);
        let control = SocketAddr::new(local_sip.ip(), CONTROL_PORT);
        let mut recorder = Recorder {
            out: Some(BufWriter::new(create_private(&file.path)?)),
            path: file.path.clone(),
            started,
            started_unix_ns,
            written: 0,
            max_bytes: file.max_bytes.unwrap_or(u64::MAX),
            local_sip,
            local_rtp,
            control,
            cut: false,
        };
        recorder.write(&pcap::global_header())?;
        let json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        recorder.write(&pcap::record(started_unix_ns, control, control, &json))?;
        Ok(recorder)
    }

    /// SIP the machine received from `from` (a request, or a response to one of its transactions).
    pub fn sip_in(&mut self, now: Instant, from: SocketAddr, message: &Message) {
        self.datagram(now, from, self.local_sip, &message.to_bytes());
    }

    /// SIP the machine sent to `to`.
    pub fn sip_out(&mut self, now: Instant, to: SocketAddr, message: &Message) {
        self.datagram(now, self.local_sip, to, &message.to_bytes());
    }

    pub fn rtp_in(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.datagram(now, from, self.local_rtp, datagram);
    }

    pub fn rtp_out(&mut self, now: Instant, to: SocketAddr, datagram: &[u8]) {
        self.datagram(now, self.local_rtp, to, datagram);
    }

    pub fn control(&mut self, now: Instant, control: &Control) {
        let json = serde_json::to_vec(control).expect("a control record serialises");
        self.datagram(now, self.control, self.control, &json);
    }

    /// The transaction event `key` ended with, when it carries no response.
    pub fn transaction_end(&mut self, now: Instant, key: &TransactionKey, event: TransactionEnd) {
        let method = key.method.as_str().to_string();
        self.control(now, &Control::Transaction { branch: key.branch.clone(), method, event });
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        if self.out.is_none() {
            return;
        }
        let at_ns = self.started_unix_ns.saturating_add(now.saturating_duration_since(self.started).as_nanos() as u64);
        let record = pcap::record(at_ns, from, to, payload);
        if self.written.saturating_add(record.len() as u64) > self.max_bytes {
            self.cut = true;
            self.close();
            return;
        }
        if let Err(e) = self.write(&record) {
            tracing::warn!(path = %self.path.display(), error = %e, "capture write failed: the capture stops here");
            self.out = None;
        }
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(out) = &mut self.out {
            out.write_all(bytes)?;
            self.written += bytes.len() as u64;
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some(mut out) = self.out.take()
            && let Err(e) = out.flush()
        {
            tracing::warn!(path = %self.path.display(), error = %e, "capture flush failed");
        }
    }

    /// Flushes the file; says in the log when the size limit cut it.
    pub fn finish(mut self) {
        self.close();
        if self.cut {
            tracing::info!(path = %self.path.display(), bytes = self.written, "capture cut at its size limit");
        }
    }
}

/// An empty file readable and writable by its owner only (a capture holds
/// the call's secrets); an existing one is emptied and made so.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}

/// A folder of per-call captures (`[capture]` in `pound serve`'s
/// configuration) that keeps at most `max_bytes` in all, the oldest captures
/// deleted first, and each call's capture at most `max_call_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureFolder {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_call_bytes: u64,
}

/// The extension every capture in a [`CaptureFolder`] has; nothing else there is touched.
const EXTENSION: &str = "pcap";

/// The folder is listed to keep its budget at most this often: a listing
/// of thousands of captures per call placed would cost more than the call.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A [`CaptureFolder`] in use: names each call's file and keeps the budget.
/// Between two looks at the folder the calls placed, and the calls in
/// progress, can take it past its budget by what they write.
#[derive(Debug)]
pub struct CaptureFiles {
    folder: CaptureFolder,
    pruned_at: std::sync::Mutex<Option<Instant>>,
}

impl CaptureFiles {
    pub fn new(folder: CaptureFolder) -> CaptureFiles {
        CaptureFiles { folder, pruned_at: std::sync::Mutex::new(None) }
    }

    /// Where the call `name` (the verification and its attempt) is captured,
    /// after making room for it when the folder is due a look.
    pub fn file_for(&self, name: &str) -> CaptureFile {
        let due = {
            let mut pruned_at = self.pruned_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if due {
                *pruned_at = Some(Instant::now());
            }
            due
        };
        let folder = &self.folder;
        if due {
            folder.prune(folder.max_call_bytes);
        }
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        CaptureFile { path: folder.dir.join(format!("{safe}.{EXTENSION}")), max_bytes: Some(folder.max_call_bytes) }
    }
}

impl CaptureFolder {
    /// Deletes the oldest captures until at most `max_bytes - room` bytes remain.
    pub fn prune(&self, room: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut captures: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == EXTENSION))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().unwrap_or(UNIX_EPOCH), meta.len(), e.path()))
            })
            .collect();
        captures.sort();
        let mut total: u64 = captures.iter().map(|c| c.1).sum();
        let keep = self.max_bytes.saturating_sub(room);
        for (_, size, path) in captures {
            if total <= keep {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => total -= size,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not delete an old capture"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::call::{CallConfig, Prompts};
    use crate::dialplan::Dialplan;
    use crate::media::codec::Codec;
    use crate::sip::{Credentials, Timers};
    use crate::vocab::{SrtpPolicy, Transport};

    fn call_config() -> CallConfig {
        let plan = Dialplan::find("press-pound", None).unwrap().with_locale("de");
        CallConfig {
            target: "sip:+14155550100@192.0.2.1;user=phone".into(),
            local_sip: "192.0.2.10:5060".parse().unwrap(),
            transport: Transport::Tls,
            from_uri: "sip:pound@192.0.2.10".into(),
            from_display: Some("Contoso".into()),
            asserted_identity: Some("<sip:+14155550000@example.com>".into()),
            credentials: Some(Credentials { user: "alice".into(), password: "s3cret".into() }),
            local_rtp: "192.0.2.10:40000".parse().unwrap(),
            codecs: vec![Codec::Pcma, Codec::Opus],
            prompts: Arc::new(Prompts::load(&plan).unwrap()),
            dialplan: Arc::new(plan),
            timers: Timers { t1: Duration::from_millis(250), ..Timers::default() },
            next_hop: "192.0.2.1:5061".parse().unwrap(),
            rtp_learning_packets: 6,
            stir: None,
            wall_clock: UNIX_EPOCH + Duration::from_millis(1_767_225_600_123),
            srtp: SrtpPolicy::Mandatory,
            code: Some(crate::code::Code::parse("0472").unwrap()),
        }
    }

    #[test]
    fn a_snapshot_gives_back_the_configuration_less_its_secrets() {
        let config = call_config();
        let snapshot = CallSnapshot::of(&config);
        assert_eq!(snapshot.auth_user.as_deref(), Some("alice"));
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(!json.contains("s3cret"), "the password stays out: {json}");
        let again: CallSnapshot = serde_json::from_str(&json).unwrap();
        let rebuilt = again.config().unwrap();
        assert_eq!(CallSnapshot::of(&rebuilt), snapshot);
        assert_eq!(rebuilt.dialplan, config.dialplan);
        assert_eq!(rebuilt.prompts.locale, "de");
        assert_eq!(rebuilt.credentials.map(|c| c.password), Some(String::new()));
    }

    #[test]
    fn control_records_name_their_input() {
        let json = |c: &Control| serde_json::to_string(c).unwrap();
        assert_eq!(json(&Control::Timeout), r#"{"input":"timeout"}"#);
        let end =
            Control::Transaction { branch: "z9hG4bKx".into(), method: "BYE".into(), event: TransactionEnd::Timeout };
        assert_eq!(json(&end), r#"{"input":"transaction","branch":"z9hG4bKx","method":"BYE","event":"timeout"}"#);
        assert_eq!(serde_json::from_str::<Control>(&json(&end)).unwrap(), end);
    }

    #[test]
    fn a_capture_stops_whole_at_its_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        let config = call_config();
        let started = Instant::now();
        let mut recorder = Recorder::create(
            &CaptureFile { path: path.clone(), max_bytes: Some(4_000) },
            started,
            &[7; 32],
            CallSnapshot::of(&config),
        )
        .unwrap();
        let peer: SocketAddr = "192.0.2.9:4000".parse().unwrap();
        for i in 0..100u64 {
            recorder.rtp_in(started + std::time::Duration::from_millis(20 * i), peer, &[0x80; 172]);
        }
        recorder.finish();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() <= 4_000, "{}", bytes.len());
        let records = pcap::read(&bytes).expect("whole records only");
        assert!(records.len() > 2, "the header and the first packets");
        assert!(records[1..].iter().all(|r| r.payload.len() == 172 && r.from == peer));
        assert_eq!(records[2].at_ns - records[1].at_ns, 20_000_000, "times count from the call's start");
    }

    #[test]
    fn a_folder_keeps_its_budget_by_deleting_the_oldest_captures() {
        let dir = tempfile::tempdir().unwrap();
        let folder = CaptureFolder { dir: dir.path().to_path_buf(), max_bytes: 1_000, max_call_bytes: 300 };
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, vec![b'n'; 5_000]).unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.pcap"));
            std::fs::write(&path, vec![0u8; 300]).unwrap();
            let at = UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
        }
        let files = CaptureFiles::new(folder);
        let file = files.file_for("v_01/2");
        assert_eq!(file.path, dir.path().join("v_01_2.pcap"), "a name cannot leave the folder");
        assert_eq!(file.max_bytes, Some(300));
        assert!(!dir.path().join("a.pcap").exists(), "the oldest went to make room");
        assert!(dir.path().join("b.pcap").exists() && dir.path().join("c.pcap").exists());
        assert!(other.exists(), "files that are not captures are left alone");
        std::fs::write(dir.path().join("d.pcap"), vec![0u8; 600]).unwrap();
        files.file_for("next");
        assert!(dir.path().join("b.pcap").exists(), "the folder is looked at again only after a while");
    }
}
