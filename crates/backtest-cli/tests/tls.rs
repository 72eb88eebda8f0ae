//! TLS end to end with the binary: `backtest server --tls-cert --tls-key`
//! serves `wss://` with a certificate issued by a throwaway CA made at test
//! time; `backtest run` and `backtest ranges` reach it with `--ca-cert`.
//!
//! Every process a test starts is killed when the test ends; every wait is
//! bounded; servers listen on free loopback ports.

use std::path::{Path, PathBuf};

use backtest_server::{Ledger, LedgerConfig, test_pki::TestPki};
use serde_json::Value;

mod common;

use common::*;

/// Files of a throwaway CA (`ca.pem`) and of a server certificate it issued
/// for `localhost` and `127.0.0.1` (`cert.pem`, `key.pem`).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let made = TestPki::generate().expect("test PKI");
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.ca, made.ca_pem).expect("write ca.pem");
    std::fs::write(&pki.cert, made.cert_pem).expect("write cert.pem");
    std::fs::write(&pki.key, made.key_pem).expect("write key.pem");
    pki
}

/// Start `backtest server` with TLS; returns it and its address
/// (`127.0.0.1:PORT`) from the listening line.
fn tls_server(pki: &Pki) -> (Proc, String) {
    let mut server = spawn(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path_str(&pki.cert),
        "--tls-key",
        path_str(&pki.key),
        "--log-level",
        "warn",
    ]);
    let url = listening_url(&mut server);
    let addr = url
        .strip_prefix("wss://")
        .and_then(|l| l.strip_suffix("/backtest"))
        .unwrap_or_else(|| panic!("unexpected url {url:?}"))
        .to_string();
    (server, addr)
}

#[test]
fn run_and_ranges_over_wss_with_ca_cert() {
    let dir = scratch("run");
    let pki = pki(&dir);
    let (server, addr) = tls_server(&pki);
    let url = format!("wss://{addr}");
    let program = LedgerConfig::default_programs()[0].clone();

    let out = dir.join("capture.jsonl");
    let result = run(&[
        "run",
        "--url",
        &url,
        "--ca-cert",
        path_str(&pki.ca),
        "--start-slot",
        "1000",
        "--slots",
        "5",
        "--tx-program",
        &program,
        "--quiet",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(result.code, Some(0), "{}", result.stderr);

    // The server runs the default ledger: its transactions of `program` in
    // slots 1000..=1004, in order, each once.
    let ledger = Ledger::new(LedgerConfig::default()).expect("ledger");
    let mut expected = Vec::new();
    for slot in 1000..=1004 {
        let data = ledger.slot(slot).expect("slot in the ledger");
        expected.extend(
            data.transactions
                .iter()
                .filter(|tx| tx.program == program)
                .map(|tx| tx.signature.clone()),
        );
    }
    assert!(!expected.is_empty());
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .expect("capture file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let got: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "transaction")
        .map(|l| l["signature"].as_str().expect("signature").to_string())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(lines.last().expect("a line")["type"], "completed");

    // `ranges` over https with the same root.
    let ranges = run(&["ranges", "--url", &url, "--ca-cert", path_str(&pki.ca)]);
    assert_eq!(ranges.code, Some(0), "{}", ranges.stderr);
    assert_eq!(ranges.stdout.lines().last(), Some("10 ranges"));

    // Without the root, the server's certificate is refused.
    let refused = run(&["ranges", "--url", &url]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        refused.stderr
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tls_files_are_usage_errors() {
    let dir = scratch("bad");
    let pki = pki(&dir);
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write junk");

    let run_junk = run(&[
        "run",
        "--url",
        "wss://127.0.0.1:1",
        "--ca-cert",
        path_str(&junk),
        "--start-slot",
        "1000",
        "--slots",
        "1",
        "--tx-program",
        "x",
    ]);
    assert_eq!(run_junk.code, Some(2), "{}", run_junk.stderr);
    assert_eq!(
        run_junk.stderr,
        format!(
            "backtest: bad --ca-cert {}: no CERTIFICATE block in the PEM root certificate\n",
            junk.display()
        )
    );

    let missing = dir.join("missing.pem");
    let ranges_missing = run(&[
        "ranges",
        "--url",
        "wss://127.0.0.1:1",
        "--ca-cert",
        path_str(&missing),
    ]);
    assert_eq!(ranges_missing.code, Some(2), "{}", ranges_missing.stderr);
    assert!(
        ranges_missing
            .stderr
            .starts_with(&format!("backtest: bad --ca-cert {}: ", missing.display())),
        "{}",
        ranges_missing.stderr
    );

    // The key is not a key: the server refuses to start, in one line.
    let server = run(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path_str(&pki.cert),
        "--tls-key",
        path_str(&pki.cert),
    ]);
    assert_eq!(server.code, Some(2), "{}", server.stderr);
    assert!(
        server
            .stderr
            .starts_with("backtest: bad --tls-cert/--tls-key: "),
        "{}",
        server.stderr
    );
    assert_eq!(server.stderr.lines().count(), 1, "{}", server.stderr);
    assert_eq!(server.stdout, "");

    // --tls-cert needs --tls-key.
    let alone = run(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path_str(&pki.cert),
    ]);
    assert_eq!(alone.code, Some(2), "{}", alone.stderr);
    assert!(alone.stderr.contains("--tls-key"), "{}", alone.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
