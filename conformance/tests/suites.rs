//! The protocol and security suites as part of `cargo test`: every MUST passes (or is a
//! known gap). The slower interop and testssl rows run in `cargo xtask conformance`.

use conformance::{run, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_and_security_suites_meet_every_must() {
    let options = Options {
        only: [
            "smtp.",
            "size.",
            "pipelining.",
            "starttls.",
            "enhanced.",
            "8bitmime.",
            "smtputf8.",
            "chunking.",
            "pop3.",
            "capa.",
            "stls.",
            "sasl.",
            "tls.implicit",
            "tls.version",
            "tls.chain",
            "sec.",
        ]
        .map(String::from)
        .to_vec(),
        skip_testssl: true,
    };
    let outcomes = run(&options).await.unwrap();
    assert!(outcomes.len() > 100, "only {} rows ran", outcomes.len());
    let blocking: Vec<String> = outcomes.iter().filter_map(|o| o.blocks(false)).collect();
    print!("{}", conformance::report::console(&outcomes));
    assert!(blocking.is_empty(), "{blocking:#?}");
}
