//! baresip (Debian package `baresip-core`) as a scripted TLS callee: it
//! answers every call (`answermode=auto`), listens for SIP over TLS on its
//! `sip_listen` port + 1 with the certificate it is given, sends a file of
//! silence as its audio, and presses keys by RFC 4733 when told to through
//! its `ctrl_tcp` module. Shared by the TLS and SRTP tests: extra account
//! parameters (such as `;mediaenc=srtp-mand`) go in `account_params`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running baresip, killed (and reaped) on drop.
pub struct Baresip {
    child: Child,
    /// Its SIP over TLS port (`sip_listen` + 1).
    pub tls_port: u16,
    ctrl_port: u16,
    log: Arc<Mutex<String>>,
}

impl Baresip {
    /// Whether baresip is installed; if not, says that `test` is skipped.
    pub fn available(test: &str) -> bool {
        let present = Command::new("baresip").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
        if !present {
            eprintln!("SKIPPED {test}: baresip is not installed (apt-get install -y baresip-core; .ci/run does)");
        }
        present
    }

    /// Starts baresip with its configuration in `dir`: `certificate` is its
    /// key and certificate in one PEM file, `ca` what it trusts.
    pub fn start_tls_callee(dir: &Path, certificate: &Path, ca: &Path, account_params: &str) -> Baresip {
        let (sip_port, ctrl_port) = (free_pair(), free_port());
        let silence = dir.join("silence.wav");
        std::fs::write(&silence, silent_wav(Duration::from_secs(60))).unwrap();
        let config = format!(
            "module_path\t/usr/lib/baresip/modules\npoll_method\tepoll\n\
             sip_listen\t127.0.0.1:{sip_port}\nsip_certificate\t{}\nsip_cafile\t{}\n\
             net_interface\t127.0.0.1\naudio_source\taufile,{}\naudio_player\taubridge,nil\n\
             audio_alert\taubridge,nil\nmodule\tg711.so\nmodule\taufile.so\nmodule\taubridge.so\n\
             module\tsrtp.so\nmodule\tctrl_tcp.so\nmodule_tmp\taccount.so\nmodule_app\tmenu.so\n\
             ctrl_tcp_listen\t127.0.0.1:{ctrl_port}\n",
            certificate.display(),
            ca.display(),
            silence.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let account = format!("<sip:callee@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU{account_params}\n");
        std::fs::write(dir.join("accounts"), account).unwrap();
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("baresip starts");
        let log = Arc::new(Mutex::new(String::new()));
        for output in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let lines = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).split(b'\n').map_while(Result::ok) {
                    lines.lock().unwrap().push_str(&(String::from_utf8_lossy(&line).into_owned() + "\n"));
                }
            });
        }
        let baresip = Baresip { child, tls_port: sip_port + 1, ctrl_port, log };
        assert!(
            baresip.wait_for("baresip is ready", Duration::from_secs(10)),
            "baresip did not start:\n{}",
            baresip.log()
        );
        baresip
    }

    /// `sips:user@127.0.0.1:PORT`, its address over TLS.
    pub fn sips_uri(&self, user: &str) -> String {
        format!("sips:{user}@127.0.0.1:{}", self.tls_port)
    }

    /// Everything baresip printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `within` for `text` in its output.
    pub fn wait_for(&self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Presses `digits` in the call in progress (RFC 4733, baresip's only way).
    pub fn press(&self, digits: &str) {
        let mut control = TcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("baresip's ctrl_tcp answers");
        let command = serde_json::json!({"command": "sndcode", "params": digits, "token": "press"}).to_string();
        // ctrl_tcp speaks netstrings.
        control.write_all(format!("{}:{command},", command.len()).as_bytes()).unwrap();
        control.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = [0u8; 512];
        let n = control.read(&mut reply).unwrap_or(0);
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.contains("\"ok\":true"), "baresip refused sndcode: {reply}");
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port free for UDP and TCP whose next port is free for TCP (baresip's TLS).
fn free_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// `length` of silence as an 8 kHz 16-bit mono WAV.
fn silent_wav(length: Duration) -> Vec<u8> {
    let data = (length.as_millis() as u32) * 16;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    wav.resize(44 + data as usize, 0);
    wav
}
