//! What the POP3 benchmark assumes of the gateway, checked without its POP3 server: a
//! message sent over SMTP by the load generator is stored as the gateway's `Received:`
//! header followed by exactly the bytes sent, so `Verify::AfterTrace` accepts what RETR
//! will serve (the decrypted stored message).

use std::sync::Arc;

use bench::gateway_proc::{bench_config, create_mailboxes};
use bench::load::{self, LoadConfig};
use bench::pop3_load::Verify;
use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;
use gateway::tls::{self, CertificateSourceSpec};

async fn start(config: &gateway::config::Config) -> (Gateway, gateway::server::Running) {
    let gateway = Gateway::open(config).unwrap();
    let (resolver, _) = tls::prepare(
        &CertificateSourceSpec::SelfSigned,
        &config.gateway.data_dir,
        &config.gateway.host_name,
    )
    .unwrap();
    let running = gateway::server::start(config, gateway.clone(), resolver)
        .await
        .unwrap();
    (gateway, running)
}

/// A paced run sends exactly what its schedule holds (20 messages a second for half a
/// second: 10), not as many as the sessions could, and cannot end before the last one is due.
#[test]
fn a_paced_run_sends_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = bench_config(dir.path());
    let created = create_mailboxes(&config, "bench", 1).unwrap();
    let size = 10 * 1024;
    let rate = (size * 8 * 20) as f64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let (_gateway, running) = start(&config).await;
        let report = load::run(LoadConfig {
            addr: running.address("smtp").unwrap(),
            tls: None,
            sessions: 3,
            messages: None,
            duration: Some(std::time::Duration::from_millis(500)),
            size,
            from: "loadgen@client.bench.test".into(),
            to: created[0].1.clone(),
            pipelining: true,
            auth: None,
            rate_bps: Some(rate),
        })
        .await
        .unwrap();
        running.stop().await;
        report
    });
    assert_eq!(
        (report.accepted, report.failed),
        (10, 0),
        "{}",
        report.summary()
    );
    assert_eq!(report.offered_bps, Some(rate));
    // Ten messages over (at least) the half-second schedule: exactly the offered rate, or
    // a little less if the last reply came after the schedule's end.
    let offered = rate / 1e6;
    assert!(
        report.mbit_per_sec() <= offered * 1.0001,
        "{}",
        report.summary()
    );
    assert!(
        report.mbit_per_sec() > offered * 0.5,
        "{}",
        report.summary()
    );
}

#[test]
fn smtp_stored_message_is_trace_plus_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = bench_config(dir.path());
    let created = create_mailboxes(&config, "bench", 1).unwrap();
    let (id, address, password) = &created[0];
    let size = 10 * 1024;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gateway = runtime.block_on(async {
        let (gateway, running) = start(&config).await;
        let report = load::run(LoadConfig {
            addr: running.address("smtp").unwrap(),
            tls: None,
            sessions: 2,
            messages: Some(3),
            duration: Some(std::time::Duration::from_secs(30)),
            size,
            from: "loadgen@client.bench.test".into(),
            to: address.clone(),
            pipelining: true,
            auth: None,
            rate_bps: None,
        })
        .await
        .unwrap();
        assert_eq!(report.accepted, 3, "{}", report.summary());
        // Each accepted message's time splits into its envelope, its sending and its end
        // of data; the two measured parts are within the whole.
        let whole = report.latency(100.0);
        for part in [report.envelope_median(), report.end_of_data_median()] {
            assert!(
                !part.is_zero() && part <= whole,
                "{part:?} of {whole:?}: {}",
                report.summary()
            );
        }
        running.stop().await;
        gateway
    });

    let mut sent = load::build_message(size, "loadgen@client.bench.test", address);
    sent.truncate(sent.len() - 3);
    let expect = Verify::AfterTrace(Arc::new(sent.clone()));
    let id = MailboxId::parse(id).unwrap();
    let key = gateway
        .unseal(&id, &MailboxPassword::from_user_input(password))
        .unwrap();
    let messages = gateway.list_messages(&id).unwrap();
    assert_eq!(messages.len(), 3);
    for summary in messages {
        let (_, body) = gateway.read_message(&key, summary.seq).unwrap();
        assert!(body.starts_with(b"Received: "));
        assert!(
            expect.matches(&body),
            "stored message is not Received: + what was sent: {:?}",
            String::from_utf8_lossy(&body[..body.len() - sent.len()])
        );
        assert!(!Verify::Exact(Arc::new(sent.clone())).matches(&body));
    }
}
