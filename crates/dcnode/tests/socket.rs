//! The node on a listening socket it is handed (socket activation through the software
//! platform's launch), its drain on SIGTERM, and a standby that never touches the data
//! directory before it holds the lock. Real `dcnode` processes, launched as enclaves by an
//! in-process platform.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dc_bundle::{BundleSpec, SignerKey, TrustRoots};
use dc_release::committee::CommitteeSigner;
use dc_tee::sim::control::LaunchRequest;
use dc_tee_sim::launch::Launch;
use dc_tee_sim::server::Server;

const NODE: &str = env!("CARGO_BIN_EXE_dcnode");

struct Lab {
    dir: tempfile::TempDir,
    socket: PathBuf,
    bundle: PathBuf,
}

impl Lab {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::bind(&dir.path().join("state"), None).unwrap();
        let socket = server.socket().to_path_buf();
        std::thread::spawn(move || server.run());
        let committee = CommitteeSigner::from_seed([7; 32]);
        let spec = BundleSpec {
            name: "dcnode".into(),
            version: "1.0.0".into(),
            isv_prod_id: 1,
            isv_svn: 1,
            debug: false,
            entrypoint: "bin/dcnode".into(),
            args: vec![],
            env_passthrough: vec!["DCNODE_LOG".into()],
            trust: TrustRoots {
                committee_keys: vec![committee.public().to_text()],
                threshold: 1,
                allow_debug_peers: false,
                authorized_enclaves: vec![],
            },
        };
        let bundle = dir.path().join("bundle");
        dc_bundle::build(
            &bundle,
            &spec,
            &[(NODE.into(), "bin/dcnode".into())],
            &SignerKey::from_seed([1; 32]),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Self {
            dir,
            socket,
            bundle,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Launches a node with `args` after the usual ones, passing `data` as its `data` socket.
    fn launch(&self, data: Option<&TcpListener>, args: &[&str]) -> Node {
        let mut all = vec![
            "--data".to_string(),
            self.data().display().to_string(),
            "--upgrade-listen".into(),
            "127.0.0.1:0".into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let req = LaunchRequest {
            bundle: self.bundle.display().to_string(),
            cwd: self.dir.path().display().to_string(),
            args: all,
            env: vec!["DCNODE_LOG=info".into()],
        };
        let passed: Vec<_> = data.iter().map(|l| ("data", l.as_fd())).collect();
        let launch = Launch::start(&self.socket, &req, &passed).unwrap();
        Node::watch(launch)
    }
}

/// Output of a running node, line by line, and its exit code.
struct Node {
    pid: u32,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    exit: mpsc::Receiver<Result<i32, String>>,
}

struct Lines(mpsc::Sender<String>, String, &'static str);

impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.push_str(&String::from_utf8_lossy(b));
        while let Some(i) = self.1.find('\n') {
            let line: String = self.1.drain(..=i).collect();
            let _ = self.0.send(format!("{}{}", self.2, line.trim_end()));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Node {
    fn watch(launch: Launch) -> Self {
        let (tx, lines) = mpsc::channel();
        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Lines(tx.clone(), String::new(), "");
            let mut err = Lines(tx, String::new(), "log: ");
            let code = launch.relay(&mut out, &mut err, |_, _, pid| {
                let _ = pid_tx.send(pid);
            });
            let _ = exit_tx.send(code);
        });
        let pid = pid_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the platform did not start the node");
        Self {
            pid,
            lines,
            seen: Vec::new(),
            exit,
        }
    }

    fn log(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// Waits for a stdout line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str) -> String {
        self.wait_for(prefix, |l| l.starts_with(prefix))
    }

    /// Waits for a line (stdout, or a log line on stderr) containing `part`.
    fn wait_containing(&mut self, part: &str) -> String {
        self.wait_for(part, |l| l.contains(part))
    }

    fn wait_for(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| f(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if f(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no line {what:?}; output:\n{}", self.log()),
            }
        }
    }

    fn exit_code(&mut self, within: Duration) -> Result<i32, String> {
        let r = self
            .exit
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("the node did not exit; output:\n{}", self.log()));
        r
    }

    fn terminate(&self) {
        // SAFETY: kill(2); the pid is the enclave process the platform started for this test.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
    }
}

/// One HTTP/1.1 exchange on `c`: the response's lower-cased head and its body, `None` if the
/// connection ended first.
fn exchange(c: &mut TcpStream, req: &[u8]) -> Option<(String, Vec<u8>)> {
    c.write_all(req).ok()?;
    response(c)
}

fn response(c: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(c.read(&mut b), Ok(0) | Err(_))
}

fn put(name: &str, body: &str) -> Vec<u8> {
    format!(
        "PUT /v1/objects/{name} HTTP/1.1\r\nhost: n\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: n\r\n\r\n").into_bytes()
}

#[test]
fn a_passed_socket_is_served_drained_and_handed_on_without_refusing_a_connection() {
    let lab = Lab::new();
    // The socket outlives both nodes: the test holds it, as the agent would.
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    // A long linger costs nothing (it ends when the last connection has closed) and leaves
    // a slow machine room between the steps below.
    let mut a = lab.launch(
        Some(&socket),
        &["--drain-linger-ms", "30000", "--drain-deadline-ms", "60000"],
    );
    a.wait_line("dcnode ready 1.0.0 ");
    // Serving the socket it was given, not one of its own.
    a.wait_containing("(passed)");

    // A keep-alive client writes an object.
    let mut keep = connect(addr);
    let (head, _) = exchange(&mut keep, &put("a", "hello")).unwrap();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    // A request in progress when the drain starts: headers sent, body not yet. A first
    // exchange proves this node accepted the connection (else it could still sit in the
    // socket's queue when the drain starts, and be the next node's).
    let mut slow = connect(addr);
    let (head, _) = exchange(&mut slow, &get("/readyz")).unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    slow.write_all(b"PUT /v1/objects/b HTTP/1.1\r\nhost: n\r\ncontent-length: 5\r\n\r\nwo")
        .unwrap();

    a.terminate();
    // The keep-alive connection is still answered, until an answer tells it to go.
    let deadline = Instant::now() + Duration::from_secs(60);
    let head = loop {
        let (head, _) = exchange(&mut keep, &get("/readyz"))
            .unwrap_or_else(|| panic!("keep-alive connection closed unanswered:\n{}", a.log()));
        if head.contains("connection: close") {
            break head;
        }
        assert!(Instant::now() < deadline, "no drain:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        head.starts_with("http/1.1 503"),
        "not ready while draining: {head}"
    );
    assert!(closed(&mut keep));

    // A client arriving now is not refused: it waits in the queue of the socket.
    let mut queued = connect(addr);
    queued.write_all(&get("/v1/objects/a")).unwrap();

    // The request in progress completes and is stored.
    slow.write_all(b"rld").unwrap();
    let (head, _) = response(&mut slow).unwrap();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    assert_eq!(a.exit_code(Duration::from_secs(30)), Ok(0), "{}", a.log());
    a.wait_containing("drained open=");

    // The next node (same release: it unseals its own keys) takes the socket over and answers
    // the client that waited.
    let mut b = lab.launch(Some(&socket), &[]);
    b.wait_line("dcnode ready 1.0.0 ");
    let (head, body) = response(&mut queued).unwrap_or_else(|| panic!("{}", b.log()));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
    let mut c = connect(addr);
    let (head, body) = exchange(&mut c, &get("/v1/objects/b")).unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"world");
    b.terminate();
    assert_eq!(b.exit_code(Duration::from_secs(30)), Ok(0), "{}", b.log());

    // Both nodes are gone; the socket is still the test's, listening.
    let _c = connect(addr);
    socket.set_nonblocking(false).unwrap();
    socket.accept().unwrap();
}

#[test]
fn a_standby_takes_nothing_before_its_keys_and_a_second_node_is_refused() {
    let lab = Lab::new();
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = lab.launch(Some(&socket), &[]);
    a.wait_line("dcnode ready 1.0.0 ");

    // A second serving node on the same data directory is refused, as always.
    let mut second = lab.launch(None, &["--listen", "127.0.0.1:0"]);
    assert_eq!(second.exit_code(Duration::from_secs(30)), Ok(1));
    assert!(
        second.log().contains("another node is running"),
        "{}",
        second.log()
    );

    // A standby does not take the lock first: with an unreachable upgrader it fails at the
    // handover, never at the lock, and never announces itself.
    let mut standby = lab.launch(
        Some(&socket),
        &["--standby", "--upgrader", "http://127.0.0.1:9"],
    );
    assert_eq!(standby.exit_code(Duration::from_secs(60)), Ok(1));
    let log = standby.log();
    assert!(log.contains("receiving keys from"), "{log}");
    assert!(!log.contains("another node is running"), "{log}");
    assert!(!log.contains("dcnode standby"), "{log}");

    // The serving node never noticed.
    let mut c = connect(socket.local_addr().unwrap());
    let (head, _) = exchange(&mut c, &get("/readyz")).unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    a.terminate();
    assert_eq!(a.exit_code(Duration::from_secs(30)), Ok(0), "{}", a.log());
}

#[test]
fn standby_requires_an_upgrader() {
    let out = std::process::Command::new(NODE)
        .args(["--data", "/nonexistent", "--standby"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--upgrader"), "{err}");
}
