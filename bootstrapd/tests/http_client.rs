//! The retrying HTTP client against real servers on loopback.

mod common;

use common::{ca_and_server, serve_tls};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bootstrapd::http::{
    Cause, HttpClient, HttpClientBuilder, HttpError, Request, RetryPolicy, TlsTrust, Verdict,
};
use bootstrapd::secret::Secret;

type Hits = Arc<AtomicUsize>;

async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn fast(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        deadline: Duration::from_secs(20),
        attempts,
        splay: Duration::ZERO,
    }
}

fn client(policy: RetryPolicy) -> HttpClient {
    HttpClient::builder(TlsTrust::SystemRoots)
        .retry(policy)
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Answers `fail` times with `status`, then 200 "ok".
fn flaky(hits: Hits, fail: usize, status: StatusCode) -> Router {
    Router::new()
        .route(
            "/x",
            get(move |State(h): State<Hits>| async move {
                if h.fetch_add(1, Ordering::SeqCst) < fail {
                    (status, "not yet").into_response()
                } else {
                    (StatusCode::OK, "ok").into_response()
                }
            }),
        )
        .with_state(hits)
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let hits = Hits::default();
    let base = serve(flaky(hits.clone(), 2, StatusCode::SERVICE_UNAVAILABLE)).await;
    let resp = client(fast(10))
        .send(&Request::get(&format!("{base}/x")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body, b"ok");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_429() {
    let hits = Hits::default();
    let base = serve(flaky(hits.clone(), 1, StatusCode::TOO_MANY_REQUESTS)).await;
    let resp = client(fast(10))
        .send(&Request::get(&format!("{base}/x")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn status_401_is_returned_not_retried() {
    let hits = Hits::default();
    let base = serve(flaky(hits.clone(), 100, StatusCode::UNAUTHORIZED)).await;
    let resp = client(fast(10))
        .send(&Request::get(&format!("{base}/x")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let e = resp
        .error_for_status(&bootstrapd::http::Method::GET)
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn caller_decides_per_status_and_exhaustion_names_url_and_cause() {
    let hits = Hits::default();
    let base = serve(flaky(hits.clone(), 100, StatusCode::NOT_FOUND)).await;
    let url = format!("{base}/x");
    let err = client(fast(4))
        .send_with(&Request::get(&url).unwrap(), |r| {
            if r.status == StatusCode::NOT_FOUND {
                Verdict::Retry
            } else {
                Verdict::Accept
            }
        })
        .await
        .unwrap_err();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    match &err {
        HttpError::Exhausted {
            attempts,
            last: Cause::Status(s),
            ..
        } => {
            assert_eq!(*attempts, 4);
            assert_eq!(*s, StatusCode::NOT_FOUND);
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("404"), "{text}");
}

#[tokio::test]
async fn connect_errors_are_retried_up_to_the_attempt_limit() {
    // A port that was just free: connections are refused.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let err = client(fast(3))
        .send(&Request::get(&format!("http://127.0.0.1:{port}/")).unwrap())
        .await
        .unwrap_err();
    match err {
        HttpError::Exhausted {
            attempts,
            last: Cause::Transport(msg),
            ..
        } => {
            assert_eq!(attempts, 3);
            assert!(msg.to_lowercase().contains("connect"), "{msg}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn per_attempt_timeout_and_overall_deadline() {
    let hits = Hits::default();
    let app = Router::new()
        .route(
            "/slow",
            get(|State(h): State<Hits>| async move {
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .with_state(hits.clone());
    let base = serve(app).await;
    let deadline = Duration::from_millis(900);
    let c = HttpClient::builder(TlsTrust::SystemRoots)
        .retry(RetryPolicy {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            deadline,
            attempts: 1000,
            splay: Duration::ZERO,
        })
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = c
        .send(&Request::get(&format!("{base}/slow")).unwrap())
        .await
        .unwrap_err();
    match err {
        HttpError::Exhausted {
            attempts,
            elapsed,
            last: Cause::Timeout(t),
            ..
        } => {
            // The deadline, not the attempt budget of 1000, ended the retries, and each
            // attempt was cut at its own timeout (the server would answer after 30 s).
            assert!((2..1000).contains(&attempts), "{attempts}");
            assert!(t <= Duration::from_millis(200));
            // Loose on purpose (no timing-sensitive bounds): far below the server's 30 s.
            assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
            // The client counts every request it sent; an attempt cut at its timeout before the
            // server's handler ran (a loaded machine) reaches the count but not the handler.
            let hits = hits.load(Ordering::SeqCst) as u32;
            assert!(
                (1..=attempts).contains(&hits),
                "{hits} hits, {attempts} attempts"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_and_without_content_length() {
    let hits = Hits::default();
    let app = Router::new()
        .route("/big", get(|| async { vec![b'a'; 200_000] }))
        .route(
            "/stream",
            get(|State(h): State<Hits>| async move {
                h.fetch_add(1, Ordering::SeqCst);
                // Chunked, no Content-Length: the limit must hold while streaming.
                let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 10_000]));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route("/fits", get(|| async { vec![b'c'; 100_000] }))
        .with_state(hits.clone());
    let base = serve(app).await;
    let c = HttpClient::builder(TlsTrust::SystemRoots)
        .retry(fast(5))
        .max_body(100_000)
        .build()
        .unwrap();
    for path in ["big", "stream"] {
        let err = c
            .send(&Request::get(&format!("{base}/{path}")).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::BodyTooLarge { limit: 100_000, .. }),
            "{path}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("/{path}")));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "oversize is not retried");
    let ok = c
        .send(&Request::get(&format!("{base}/fits")).unwrap())
        .await
        .unwrap();
    assert_eq!(ok.body.len(), 100_000);
}

#[tokio::test]
async fn put_with_headers_body_and_response_headers() {
    let app = Router::new().route(
        "/echo",
        any(
            |method: axum::http::Method, headers: HeaderMap, body: String| async move {
                let token = headers
                    .get("x-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Response::builder()
                    .header("x-method", method.as_str())
                    .header("x-seen-token", token)
                    .body(Body::from(format!("body={body}")))
                    .unwrap()
            },
        ),
    );
    let base = serve(app).await;
    let req = Request::put(&format!("{base}/echo"))
        .unwrap()
        .header("x-plain", "1")
        .secret_header("x-token", &Secret::new("tok"))
        .body("payload");
    let resp = client(fast(1)).send(&req).await.unwrap();
    assert_eq!(resp.header("x-method"), Some("PUT"));
    assert_eq!(resp.header("x-seen-token"), Some("tok"));
    assert_eq!(resp.body, b"body=payload");

    let req = Request::post(&format!("{base}/echo"))
        .unwrap()
        .json(&serde_json::json!({"a": 1}))
        .unwrap();
    let resp = client(fast(1)).send(&req).await.unwrap();
    assert_eq!(resp.header("x-method"), Some("POST"));
    assert_eq!(resp.body, br#"body={"a":1}"#);
}

/// Serves `/cacerts` over TLS with `cert`/`key`.
async fn serve_cacerts(cert: String, key: String) -> String {
    let app = Router::new().route("/cacerts", get(|| async { "pem text\n" }));
    serve_tls(&cert, &key, app).await
}

#[tokio::test]
async fn tls_trust_modes() {
    let (ca_pem, srv_pem, srv_key) = ca_and_server();
    let (other_ca, _, _) = ca_and_server();
    let base = serve_cacerts(srv_pem, srv_key).await;
    let req = Request::get(&format!("{base}/cacerts")).unwrap();

    let pinned = HttpClient::builder(TlsTrust::pinned_pem(ca_pem.as_bytes()).unwrap())
        .retry(fast(1))
        .build()
        .unwrap();
    assert_eq!(pinned.send(&req).await.unwrap().body, b"pem text\n");

    for trust in [
        TlsTrust::SystemRoots,
        TlsTrust::pinned_pem(other_ca.as_bytes()).unwrap(),
    ] {
        let c = HttpClient::builder(trust.clone())
            .retry(fast(1))
            .build()
            .unwrap();
        let err = c.send(&req).await.unwrap_err();
        assert!(
            matches!(
                err,
                HttpError::Exhausted {
                    last: Cause::Certificate(_),
                    ..
                }
            ),
            "{trust:?}: {err:?}"
        );
        // Opted in, a refused certificate ends the request after that many attempts
        // rather than at the deadline or the attempt limit.
        let c = HttpClient::builder(trust.clone())
            .retry(fast(50))
            .fail_fast_on_certificate(2)
            .build()
            .unwrap();
        let err = c.send(&req).await.unwrap_err();
        assert!(
            matches!(err, HttpError::Certificate { attempts: 2, .. }),
            "{trust:?}: {err:?}"
        );
    }

    let insecure = HttpClientBuilder::insecure_for_cacerts_fetch()
        .retry(fast(1))
        .build()
        .unwrap();
    assert_eq!(insecure.send(&req).await.unwrap().body, b"pem text\n");
}

#[tokio::test]
async fn secret_headers_do_not_follow_cross_origin_redirects() {
    let seen = Hits::default();
    let other = serve(
        Router::new()
            .route(
                "/x",
                get(|State(h): State<Hits>, headers: HeaderMap| async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    format!("token={}", headers.contains_key("x-token"))
                }),
            )
            .with_state(seen.clone()),
    )
    .await;
    let target = format!("{other}/x");
    let base = serve(
        Router::new()
            .route(
                "/away",
                get(move || async move { axum::response::Redirect::temporary(&target) }),
            )
            .route(
                "/here",
                get(|| async { axum::response::Redirect::temporary("/final") }),
            )
            .route(
                "/final",
                get(|headers: HeaderMap| async move {
                    format!("token={}", headers.contains_key("x-token"))
                }),
            ),
    )
    .await;
    let c = client(fast(1));
    let plain = c
        .send(&Request::get(&format!("{base}/away")).unwrap())
        .await
        .unwrap();
    assert_eq!(plain.body, b"token=false");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let secret = Secret::new("tok");
    let req = Request::get(&format!("{base}/away"))
        .unwrap()
        .secret_header("x-token", &secret);
    let resp = c.send(&req).await.unwrap();
    assert_eq!(resp.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the other origin was not contacted"
    );

    let req = Request::get(&format!("{base}/here"))
        .unwrap()
        .secret_header("x-token", &secret);
    let resp = c.send(&req).await.unwrap();
    assert_eq!(
        resp.body, b"token=true",
        "same-origin redirects are followed"
    );
}

/// A body streamed into a file: a transfer cut off halfway is retried from the start, and the
/// file (and the sink's sha256) holds the second transfer alone, not the first one's bytes
/// before it.
#[tokio::test]
async fn a_download_into_a_file_starts_over_at_each_attempt() {
    let hits: Hits = Arc::new(AtomicUsize::new(0));
    let full = "0123456789".repeat(10_000);
    let body = full.clone();
    let app = Router::new()
        .route(
            "/image.raw",
            get(move |State(h): State<Hits>| {
                let body = body.clone();
                async move {
                    if h.fetch_add(1, Ordering::SeqCst) == 0 {
                        let cut = futures_util::stream::iter(vec![
                            Ok::<_, std::io::Error>(axum::body::Bytes::from("partial-")),
                            Err(std::io::Error::other("cut off")),
                        ]);
                        let mut r = Response::new(Body::from_stream(cut));
                        r.headers_mut()
                            .insert("content-length", body.len().to_string().parse().unwrap());
                        r
                    } else {
                        (StatusCode::OK, body).into_response()
                    }
                }
            }),
        )
        .with_state(hits.clone());
    let base = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    std::fs::write(&path, "stale bytes of an earlier run").unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let sink = bootstrapd::http::Sink::new(file, path.to_string_lossy());
    let resp = client(fast(3))
        .download_into(&Request::get(&format!("{base}/image.raw")).unwrap(), &sink)
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.body.is_empty());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), full);
    // The hash covers the second transfer alone too: the caller checks it without reading
    // the file back.
    use sha2::Digest;
    assert_eq!(sink.sha256_hex(), hex::encode(sha2::Sha256::digest(&full)));
}
