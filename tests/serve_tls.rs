//! TLS and mutual TLS end to end: `halo serve --tls-cert --tls-key --tls-client-ca` answers a
//! client that trusts its CA and presents a certificate the client CA signed, and refuses a
//! client without a certificate and a plaintext client. Certificates are made with openssl.

mod serve_common;

use halo_proto::worker::v1 as pb;
use serve_common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server and a client certificate it signed.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=halo test CA",
    ]);
    openssl(dir, &ca);
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let mut req = vec!["req"];
        req.extend(ec);
        let (key, csr, cn) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("/CN={name}"),
        );
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &cn]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

async fn tls_channel(
    addr: &str,
    pki: &Path,
    with_identity: bool,
) -> Result<Channel, tonic::transport::Error> {
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(read("client.pem"), read("client.key")));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_signed_certificate() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).to_str().unwrap().to_string();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let server = Server::start(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        &[],
    );

    let channel = tls_channel(&server.addr, pki.path(), true)
        .await
        .expect("mTLS connect");
    let mut c = pb::worker_client::WorkerClient::new(channel);
    let info = c
        .get_info(pb::GetInfoRequest {})
        .await
        .expect("GetInfo over mTLS")
        .into_inner();
    assert!(info.kv.unwrap().total_blocks > 0);
    let (prompt, golden_ids) = golden().remove(0);
    let done = c
        .generate(ids_request(prompt, golden_ids.len() as u32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.token_ids, golden_ids);

    // No client certificate: the handshake or the first call fails.
    let refused = match tls_channel(&server.addr, pki.path(), false).await {
        Err(_) => true,
        Ok(ch) => pb::worker_client::WorkerClient::new(ch)
            .get_info(pb::GetInfoRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate must be refused");

    // Plaintext against a TLS port fails too.
    let plain = match Channel::from_shared(server.url()).unwrap().connect().await {
        Err(_) => true,
        Ok(ch) => pb::worker_client::WorkerClient::new(ch)
            .get_info(pb::GetInfoRequest {})
            .await
            .is_err(),
    };
    assert!(plain, "plaintext must not reach a TLS server");
}
