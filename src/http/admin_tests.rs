//! Unit tests of the admin API: access control and the token compare.

use super::*;
use axum::body::Body;
use tower::ServiceExt;

fn state(dir: &std::path::Path, token: Option<&str>) -> AdminState {
    let queue = Queue::open(
        dir,
        danerelay_queue::QueueOptions {
            retry: vec![Duration::from_secs(60)],
            max_age: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
        },
    )
    .unwrap();
    AdminState {
        queue,
        token: token.map(str::to_string),
        tls_rpt: None,
        shaper: None,
        gate: Gate::default(),
        drain: None,
    }
}

async fn status(app: Router, peer: &str, auth: Option<&str>) -> StatusCode {
    let mut req = Request::builder().uri("/api/queue");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    app.oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn without_a_token_only_loopback_callers_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path(), None));
    assert_eq!(
        status(app.clone(), "127.0.0.1:5000", None).await,
        StatusCode::OK
    );
    assert_eq!(
        status(app.clone(), "[::1]:5000", None).await,
        StatusCode::OK
    );
    assert_eq!(
        status(app.clone(), "192.0.2.10:5000", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(app, "10.1.2.3:5000", Some("Bearer anything")).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn with_a_token_every_caller_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path(), Some("t0ken")));
    assert_eq!(
        status(app.clone(), "127.0.0.1:5000", None).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(app.clone(), "192.0.2.10:5000", Some("Bearer t0ken")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(app.clone(), "192.0.2.10:5000", Some("Bearer t0ke")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(app.clone(), "192.0.2.10:5000", Some("Bearer t0keN")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(app, "127.0.0.1:5000", Some("Basic t0ken")).await,
        StatusCode::FORBIDDEN
    );
}

#[test]
fn token_compare_needs_every_byte_and_the_length() {
    assert!(constant_time_eq(b"t0ken", b"t0ken"));
    assert!(!constant_time_eq(b"t0ken", b"t0keN"));
    assert!(!constant_time_eq(b"t0ken", b"t0ke"));
    assert!(!constant_time_eq(b"t0ken", b"t0ken!"));
    assert!(!constant_time_eq(b"", b"t0ken"));
}
