//! No signing key or agent binary over plain http: an https request that is redirected to
//! plain http is refused, not followed, and nothing is asked of the http server.

mod common;

use common::{ca_and_server, serve_tls};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bootstrapd::http::{HttpClient, HttpError, Request, RetryPolicy, TlsTrust};

/// A plain-http server that counts its requests and serves a "key".
async fn plain_http() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nswapped\n"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

/// An https server whose every path redirects to `target` + the path.
async fn https_redirecting_to(target: String, status: StatusCode) -> (String, String) {
    let (ca, cert, key) = ca_and_server();
    let app = Router::new().fallback(move |uri: axum::http::Uri| {
        let to = format!("{target}{}", uri.path());
        async move { (status, [(header::LOCATION, to)]).into_response() }
    });
    (serve_tls(&cert, &key, app).await, ca)
}

#[tokio::test]
async fn https_to_http_redirects_are_refused() {
    let (http_url, hits) = plain_http().await;
    for status in [
        StatusCode::FOUND,
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::TEMPORARY_REDIRECT,
    ] {
        let (https_url, ca) = https_redirecting_to(http_url.clone(), status).await;
        let client = HttpClient::builder(TlsTrust::pinned_pem(ca.as_bytes()).unwrap())
            .retry(RetryPolicy::once(std::time::Duration::from_secs(10)))
            .build()
            .unwrap();
        for path in ["/linux/debian/gpg", "/assets/rancher-system-agent-amd64"] {
            let req = Request::get(&format!("{https_url}{path}?X-Amz-Signature=s3")).unwrap();
            let r = client.send(&req).await;
            let err = match r {
                Ok(resp) => panic!(
                    "{status} {path}: followed to {} ({})",
                    resp.url, resp.status
                ),
                Err(e) => e,
            };
            assert!(matches!(err, HttpError::InsecureRedirect { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("plain http") && text.contains(path), "{text}");
            assert!(!text.contains("s3"), "{text}");
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the plain-http server was asked"
    );
}

#[tokio::test]
async fn https_to_https_redirects_still_work() {
    let (target, ca1) = https_redirecting_to("https://127.0.0.1:1".into(), StatusCode::FOUND).await;
    // A redirect that stays on https is followed (here to a closed port: a transport error,
    // not a refusal).
    let client = HttpClient::builder(TlsTrust::pinned_pem(ca1.as_bytes()).unwrap())
        .retry(RetryPolicy::once(std::time::Duration::from_secs(5)))
        .build()
        .unwrap();
    let err = client
        .send(&Request::get(&format!("{target}/x")).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Exhausted { .. }), "{err}");
    assert!(err.to_string().contains("Connection refused"), "{err}");
}
