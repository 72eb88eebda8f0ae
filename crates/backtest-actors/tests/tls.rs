//! `wss://` end to end: the reference server serves TLS with a certificate
//! issued by a throwaway CA made at test time; the supervisor trusts that CA
//! (builder option) and runs a session through it, and without it refuses
//! the server's certificate.

mod support;

use std::{collections::BTreeSet, time::Duration};

use backtest_actors::{
    ManagedSessionError, ReconnectPolicy, SessionSupervisor, Shutdown, SubscribeTransactions,
    WaitOutcome, WaitSession,
};
use backtest_server::{ServerConfig, TlsConfig, test_pki::TestPki as Pki};
use serde_json::json;
use support::*;

fn pki() -> Pki {
    Pki::generate().expect("test PKI")
}

fn tls_config(pki: &Pki) -> ServerConfig {
    ServerConfig {
        tls: Some(TlsConfig {
            cert_chain_pem: pki.cert_pem.clone().into_bytes(),
            key_pem: pki.key_pem.clone().into_bytes(),
        }),
        ..config()
    }
}

#[actix_rt::test]
async fn session_runs_over_wss_with_a_custom_root() {
    let pki = pki();
    let server = server(tls_config(&pki));
    assert_eq!(
        server.control_url(),
        format!("wss://{}/backtest", server.addr())
    );
    assert_eq!(server.http_base(), format!("https://{}", server.addr()));
    let programs = programs(&server);
    let addr =
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1019, json!({})))
            .add_root_certificate_pem(pki.ca_pem.as_bytes())
            .expect("the CA PEM parses")
            .start();
    let info = addr.send(WaitSession).await.unwrap().unwrap();
    // The relative data-plane endpoint resolves against the TLS origin.
    assert_eq!(
        info.rpc_endpoint,
        format!("https://{}/rpc/{}", server.addr(), info.session_id)
    );
    addr.send(SubscribeTransactions {
        programs: programs.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    let capture = drive(&addr, 5).await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels.last());
    let record = server.state().record(&info.session_id).unwrap();
    assert_eq!(record.slots.len(), 20);
    // Every transaction of the subscribed programs, once (a transaction
    // invoking both programs is one notification).
    let expected: BTreeSet<&String> = record.transactions.values().flatten().collect();
    let got: BTreeSet<&String> = capture.signatures.iter().collect();
    assert!(expected.len() >= 20, "{}", expected.len());
    assert_eq!(capture.signatures.len(), expected.len());
    assert_eq!(got, expected);
    assert!(capture.completed);
    assert_eq!(addr.send(WaitOutcome).await.unwrap(), Ok(()));
    addr.send(Shutdown).await.unwrap();
    server.stop();
}

#[actix_rt::test]
async fn der_root_works_too() {
    let pki = pki();
    let server = server(tls_config(&pki));
    let addr =
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1004, json!({})))
            .add_root_certificate(pki.ca_der.clone())
            .start();
    let capture = drive(&addr, 5).await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels.last());
    assert!(capture.completed);
    addr.send(Shutdown).await.unwrap();
    server.stop();
}

#[actix_rt::test]
async fn without_the_root_the_certificate_is_refused() {
    let pki = pki();
    let server = server(tls_config(&pki));
    let policy = ReconnectPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
        max_attempts: 1,
        ..ReconnectPolicy::default()
    };
    let addr =
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1004, json!({})))
            .reconnect_policy(policy)
            .start();
    let outcome = tokio::time::timeout(WAIT, addr.send(WaitOutcome))
        .await
        .expect("an outcome within the wait")
        .unwrap();
    match outcome {
        Err(ManagedSessionError::Create(reason)) => {
            assert!(reason.contains("certificate"), "{reason}");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected a create failure, got {other:?}"),
    }
    assert_eq!(server.state().live_sessions(), 0);
    addr.send(Shutdown).await.unwrap();
    server.stop();
}

#[test]
fn bad_pem_root_is_refused_by_the_builder() {
    let err = SessionSupervisor::builder("wss://127.0.0.1:1", "key", create(1000, 1000, json!({})))
        .add_root_certificate_pem(b"not a certificate")
        .unwrap_err();
    assert_eq!(err, "no CERTIFICATE block in the PEM root certificate");
}
