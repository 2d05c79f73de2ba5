//! Fixtures shared by bootstrapd's integration tests.

/// A CA and a server certificate for 127.0.0.1 signed by it (Rancher's usual shape):
/// `(ca_pem, server_cert_pem, server_key_pem)`.
pub fn ca_and_server() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let srv_key = KeyPair::generate().unwrap();
    let srv_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let srv_cert = srv_params.signed_by(&srv_key, &issuer).unwrap();
    (ca_cert.pem(), srv_cert.pem(), srv_key.serialize_pem())
}
