//! RFC 5321 §4.5.3.2: every phase gives up after its own limit, measured
//! in paused (virtual) time.

use super::*;

fn big_body() -> Vec<u8> {
    let line = format!("{}\r\n", "y".repeat(98));
    line.repeat(40_000).into_bytes()
}

/// (phase, script rule making the fake go silent there, expected timeout)
#[tokio::test(start_paused = true)]
async fn every_phase_times_out_per_rfc_5321() {
    let t = Timeouts::default();
    let cases: [(Phase, Script, Duration); 7] = [
        (
            Phase::Greeting,
            Script {
                greeting: "STALL".into(),
                ..Script::default()
            },
            t.greeting,
        ),
        (Phase::Ehlo, Script::default().rule("EHLO", "STALL"), t.ehlo),
        (
            Phase::Mail,
            Script::default()
                .without("PIPELINING")
                .rule("MAIL", "STALL"),
            t.mail,
        ),
        (Phase::Rcpt, Script::default().rule("RCPT", "STALL"), t.rcpt),
        (Phase::Data, Script::default().rule("DATA", "STALL"), t.data),
        (
            Phase::DataBlock,
            Script::default().rule("DATA", "354 STALLREAD"),
            t.data_block,
        ),
        (
            Phase::FinalDot,
            {
                let mut s = Script::default();
                s.final_replies.push_back("STALL".into());
                s
            },
            t.final_dot,
        ),
    ];
    for (phase, script, limit) in cases {
        let (io, _t) = mx::start(script);
        let mut c = Client::new(io, Timeouts::default(), "relay.test");
        let start = tokio::time::Instant::now();
        let err: Arc<ClientError> = match c.greeting().await {
            Err(e) => Arc::new(e),
            Ok(_) => match c.ehlo().await {
                Err(e) => Arc::new(e),
                Ok(_) => {
                    // 4 MiB for DataBlock: more than the duplex buffer, so a
                    // peer that stops reading blocks our writes.
                    let body = if phase == Phase::DataBlock {
                        big_body()
                    } else {
                        BODY.to_vec()
                    };
                    let r = c.transaction(&envelope(&["a@dest.test"]), &body[..]).await;
                    match &r.recipients[0] {
                        RcptResult::Error(e) => e.clone(),
                        other => panic!("{phase}: expected a timeout, got {other:?}"),
                    }
                }
            },
        };
        let ClientError::Timeout { phase: got, after } = *err else {
            panic!("{phase}: {err}")
        };
        assert_eq!((got, after), (phase, limit));
        assert_eq!(start.elapsed(), limit, "{phase}");
        assert!(!c.is_usable());
        let Outcome::Deferred(reason) = outcome::from_error(&AttemptError::Smtp(err)) else {
            panic!()
        };
        assert_eq!(reason.status(), EnhancedCode(4, 4, 2));
    }
}
