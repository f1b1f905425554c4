//! An attacker who knows the archiver's mailbox id (it is the journal address) and guesses
//! its password over POP3S, from its own address, with a few connections at once, for as
//! long as the faults last; refused, it comes back after a short pause. Its guesses must
//! never make the gateway refuse the archiver's right password.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::conn::{Broken, Conn};
use super::gateway::{NAME as GATEWAY, POP3S_PORT};
use super::SharedRef;
use crate::scenario::AttackerPlan;

pub async fn run(plan: AttackerPlan, shared: SharedRef, mut rng: SmallRng) -> turmoil::Result {
    tokio::time::sleep(plan.start).await;
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..plan.connections {
        let (plan, shared) = (plan.clone(), shared.clone());
        let rng = SmallRng::seed_from_u64(rng.random());
        lanes.spawn_local(guess_until_faults_end(plan, shared, rng, lane));
    }
    let mut guesses = 0u32;
    while let Some(done) = lanes.join_next().await {
        guesses += done.unwrap_or(0);
    }
    shared.log(
        &plan.name,
        format!("done after {guesses} wrong passwords answered"),
    );
    Ok(())
}

/// One connection after another, each guessing until the gateway closes it.
async fn guess_until_faults_end(
    plan: AttackerPlan,
    shared: SharedRef,
    mut rng: SmallRng,
    lane: usize,
) -> u32 {
    let mut answered = 0;
    while !shared.faults_over.get() {
        match session(&plan, &mut rng, &mut answered).await {
            Ok(refusal) => shared.log(&plan.name, format!("lane {lane}: {refusal}")),
            Err(broken) => shared.log(&plan.name, format!("lane {lane}: {broken}")),
        }
        let pause = rng.random_range(100..plan.max_pause_ms.max(101));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    answered
}

/// Guesses until the session ends; returns the line that ended it.
async fn session(
    plan: &AttackerPlan,
    rng: &mut SmallRng,
    answered: &mut u32,
) -> Result<String, Broken> {
    let mut conn = Conn::connect(GATEWAY, POP3S_PORT, Duration::from_secs(60)).await?;
    conn.upgrade().await?;
    let greeting = String::from_utf8_lossy(&conn.line().await?).into_owned();
    if !greeting.starts_with("+OK") {
        return Ok(greeting);
    }
    loop {
        let guess: String = (0..4)
            .map(|_| {
                (0..4)
                    .map(|_| rng.random_range(b'A'..=b'Z') as char)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("-");
        conn.send(format!("USER {}\r\nPASS {guess}\r\n", plan.mailbox).as_bytes())
            .await?;
        let user = String::from_utf8_lossy(&conn.line().await?).into_owned();
        if !user.starts_with("+OK") {
            return Ok(user);
        }
        let pass = String::from_utf8_lossy(&conn.line().await?).into_owned();
        if pass.starts_with("+OK") {
            return Err(Broken::Protocol("a guessed password was accepted".into()));
        }
        if !pass.starts_with("-ERR [AUTH]") {
            return Ok(pass);
        }
        *answered += 1;
    }
}
