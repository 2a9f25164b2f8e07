import Foundation
import HourglassCertificates
import NIOSSL

/// The PEM material one side of a TLS connection uses: the private CA it trusts, its own
/// certificate and key.
public struct TLSCredentials: Sendable, Hashable {
  /// The CA certificate(s) trusted to sign the peer's certificate, PEM.
  public var trustedCAPEM: String
  /// This side's certificate chain, PEM.
  public var certificatePEM: String
  /// This side's private key, PEM.
  public var privateKeyPEM: String

  /// Creates credentials from PEM text.
  public init(trustedCAPEM: String, certificatePEM: String, privateKeyPEM: String) {
    self.trustedCAPEM = trustedCAPEM
    self.certificatePEM = certificatePEM
    self.privateKeyPEM = privateKeyPEM
  }

  /// Reads credentials from PEM files; the error names the file that could not be read.
  public init(caFile: String, certificateFile: String, keyFile: String) throws {
    func read(_ path: String, _ what: String) throws -> String {
      do {
        return try String(contentsOfFile: path, encoding: .utf8)
      } catch {
        throw TransportError("cannot read the \(what) file \(path): \(error.localizedDescription)")
      }
    }
    self.init(
      trustedCAPEM: try read(caFile, "CA certificate"),
      certificatePEM: try read(certificateFile, "certificate"),
      privateKeyPEM: try read(keyFile, "private key")
    )
  }

  /// The ALPN protocol both sides must agree on.
  public static let alpnProtocol = "hourglass/1"

  /// A server configuration: TLS 1.3 only, ALPN `hourglass/1`, and client certificates
  /// required and verified against the private CA.
  public func serverConfiguration() throws -> TLSConfiguration {
    var configuration = TLSConfiguration.makeServerConfiguration(
      certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { .certificate($0) },
      privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem))
    )
    configuration.minimumTLSVersion = .tlsv13
    configuration.maximumTLSVersion = .tlsv13
    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(trustedCAPEM.utf8)))
    // Clients present certificates without host names: verify the chain, not a name.
    configuration.certificateVerification = .noHostnameVerification
    configuration.applicationProtocols = [Self.alpnProtocol]
    return configuration
  }

  /// A client configuration: TLS 1.3 only, ALPN `hourglass/1`, the server's certificate
  /// verified against the private CA and the host name dialled.
  public func clientConfiguration() throws -> TLSConfiguration {
    var configuration = TLSConfiguration.makeClientConfiguration()
    configuration.minimumTLSVersion = .tlsv13
    configuration.maximumTLSVersion = .tlsv13
    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(trustedCAPEM.utf8)))
    configuration.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { .certificate($0) }
    configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem))
    configuration.certificateVerification = .fullVerification
    configuration.applicationProtocols = [Self.alpnProtocol]
    return configuration
  }
}

/// A transport failure that is not a status from the peer (bad files, bind failure…).
public struct TransportError: Error, Sendable, CustomStringConvertible {
  /// What went wrong.
  public var message: String
  /// Creates an error.
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

extension DevelopmentCA {
  /// Issues a certificate for `name` in `role` and returns it as credentials that trust this
  /// CA: the whole TLS identity of a development coordinator, executor or user in one call.
  public func credentials(name: String, role: CertificateRole, dnsNames: [String] = [], ipAddresses: [String] = []) throws -> TLSCredentials {
    let issued = try issue(name: name, role: role, dnsNames: dnsNames, ipAddresses: ipAddresses)
    return TLSCredentials(trustedCAPEM: authority.certificatePEM, certificatePEM: issued.certificatePEM, privateKeyPEM: issued.privateKeyPEM)
  }
}
