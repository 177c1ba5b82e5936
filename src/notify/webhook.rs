//! Webhook delivery: the notice's JSON POSTed to a URL, over HTTPS with
//! rustls (Mozilla's roots, built in: a container needs no ca-certificates;
//! plus `notify.ca_file`'s) or plain HTTP. Any 2xx is a delivery; anything
//! else is retried.

use super::notice::Notice;
use super::Target;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Legacy};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type Client = Legacy<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client for every webhook: they share its connection pool. `ca`:
/// certificate authorities trusted besides Mozilla's roots.
pub fn client(ca: &[CertificateDer<'static>]) -> Client {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Each was parsed when the stack file was read; one that is no CA
    // certificate rustls can use is skipped here, and its webhook's
    // delivery fails saying the certificate is not trusted.
    roots.add_parsable_certificates(ca.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports rustls' default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Legacy::builder(TokioExecutor::new()).build(https)
}

pub struct Webhook {
    url: hyper::Uri,
    name: String,
    client: Client,
}

impl Webhook {
    pub fn new(w: &crate::config::Webhook, client: Client) -> Webhook {
        Webhook {
            url: w.url.clone(),
            name: format!("webhook {}", w.host),
            client,
        }
    }
}

impl Target for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        notice: &'a Notice,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let body = Bytes::from(notice.json().to_string());
            let req = hyper::Request::post(self.url.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(
                    hyper::header::USER_AGENT,
                    concat!("cogno/", env!("CARGO_PKG_VERSION")),
                )
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            // The error's text never holds the URL's path: hyper's and
            // rustls' messages name the connection, not the request.
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = res.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        })
    }
}

/// An error and its causes on one line ("client error (Connect): tcp
/// connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An https:// webhook goes through rustls: a server that does not
    /// speak TLS is a handshake failure, reported, never a panic.
    #[tokio::test]
    async fn https_goes_through_rustls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            }
        });
        let url = format!("https://127.0.0.1:{port}/hooks/T0KEN");
        let config = crate::config::Webhook {
            url: url.parse().unwrap(),
            host: format!("https://127.0.0.1:{port}"),
        };
        let hook = Webhook::new(&config, client(&[]));
        let mut watch = super::super::notice::Watch::default();
        let mut ev = crate::events::Event::new("transition", Some("web"));
        ev.to = Some("fatal".into());
        let notice = watch.notice(&ev, "h").unwrap();
        let err = hook.deliver(&notice).await.unwrap_err();
        assert!(!err.contains("T0KEN"), "{err}");
        // rustls' word for plain HTTP where a TLS record was expected.
        assert!(err.contains("InvalidContentType"), "{err}");
    }
}
