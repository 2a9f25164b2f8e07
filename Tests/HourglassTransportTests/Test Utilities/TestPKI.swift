import HourglassCertificates
import HourglassTransport

/// Certificates for the tests, made once per process: a CA with a server, a user and an
/// executor; a second, unrelated CA with its own user; and a server certificate with DNS
/// names only (NIOSSL accepts an IP SAN that matches the peer's address).
enum TestPKI {
  static let ca = try! DevelopmentCA(name: "Test CA")
  static let otherCA = try! DevelopmentCA(name: "Other CA")
  static let server = try! ca.issue(name: "coordinator-1", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
  static let dnsOnlyServer = try! ca.issue(name: "coordinator-dns", role: .coordinator, dnsNames: ["hourglass.test"])
  static let alice = try! ca.issue(name: "alice", role: .user)
  static let intruder = try! otherCA.issue(name: "mallory", role: .user)

  static var serverCredentials: TLSCredentials {
    TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: server.certificatePEM, privateKeyPEM: server.privateKeyPEM)
  }

  static var aliceCredentials: TLSCredentials {
    TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: alice.certificatePEM, privateKeyPEM: alice.privateKeyPEM)
  }

  /// Mallory's certificate comes from another CA, but she trusts our CA for the server.
  static var intruderCredentials: TLSCredentials {
    TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: intruder.certificatePEM, privateKeyPEM: intruder.privateKeyPEM)
  }
}
