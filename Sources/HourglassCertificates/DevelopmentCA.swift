import Crypto
import Foundation
import SwiftASN1
import X509

/// The role a certificate gives its holder; written in the subject's organizational unit.
public enum CertificateRole: String, Sendable, CaseIterable {
  /// A coordinator (server certificate, also used to connect to peers).
  case coordinator
  /// An executor: may open the executor stream.
  case executor
  /// A user: may call the task service for its own tasks.
  case user
  /// A program acting for users who authenticate with bearer tokens (a shared CLI or gateway
  /// certificate): may call the task service only with a token, as the token's user.
  case client
}

/// A certificate and its private key, PEM-encoded.
public struct IssuedCertificate: Sendable, Hashable {
  /// The certificate, PEM.
  public var certificatePEM: String
  /// The private key (PKCS#8), PEM.
  public var privateKeyPEM: String
}

/// A private certificate authority for development and tests: makes a CA and issues
/// certificates whose subject carries the holder's name (CN) and role (OU), made in-process
/// with swift-certificates (no external tool).
public struct DevelopmentCA: Sendable {
  /// The CA certificate and key.
  public let authority: IssuedCertificate
  private let certificate: Certificate
  private let key: Certificate.PrivateKey

  /// Makes a new CA named `name`, valid for `validity` from now.
  public init(name: String = "Hourglass Development CA", validity: TimeInterval = 10 * 365 * 86_400, now: Date = Date()) throws {
    let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
    let subject = try DistinguishedName {
      OrganizationName("Hourglass")
      CommonName(name)
    }
    let certificate = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: key.publicKey,
      notValidBefore: now - 3600,
      notValidAfter: now + validity,
      issuer: subject,
      subject: subject,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
        Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
        SubjectKeyIdentifier(hash: key.publicKey)
      },
      issuerPrivateKey: key
    )
    self.certificate = certificate
    self.key = key
    self.authority = IssuedCertificate(
      certificatePEM: try certificate.serializeAsPEM().pemString,
      privateKeyPEM: try key.serializeAsPEM().pemString
    )
  }

  /// Loads an existing CA.
  public init(certificatePEM: String, privateKeyPEM: String) throws {
    self.certificate = try Certificate(pemEncoded: certificatePEM)
    self.key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
    self.authority = IssuedCertificate(certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM)
  }

  /// Issues a certificate for `name` in `role`, usable for both TLS server and client auth.
  /// - Parameters:
  ///   - dnsNames: subject alternative DNS names (servers: the names clients dial).
  ///   - ipAddresses: subject alternative IP addresses, dotted IPv4 or IPv6 text.
  public func issue(
    name: String,
    role: CertificateRole,
    dnsNames: [String] = [],
    ipAddresses: [String] = [],
    validity: TimeInterval = 825 * 86_400,
    now: Date = Date()
  ) throws -> IssuedCertificate {
    let leafKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
    let subject = try DistinguishedName {
      OrganizationName("Hourglass")
      OrganizationalUnitName(role.rawValue)
      CommonName(name)
    }
    var names: [GeneralName] = dnsNames.map { .dnsName($0) }
    for address in ipAddresses {
      guard let bytes = Self.ipBytes(address) else {
        throw CertificateError(message: "not an IP address: \(address)")
      }
      names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
    }
    let sans = names
    let leaf = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: leafKey.publicKey,
      notValidBefore: now - 3600,
      notValidAfter: now + validity,
      issuer: certificate.subject,
      subject: subject,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: try Certificate.Extensions {
        Critical(BasicConstraints.notCertificateAuthority)
        Critical(KeyUsage(digitalSignature: true))
        try ExtendedKeyUsage([.serverAuth, .clientAuth])
        SubjectKeyIdentifier(hash: leafKey.publicKey)
        AuthorityKeyIdentifier(keyIdentifier: try certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        if !sans.isEmpty {
          SubjectAlternativeNames(sans)
        }
      },
      issuerPrivateKey: key
    )
    return IssuedCertificate(
      certificatePEM: try leaf.serializeAsPEM().pemString,
      privateKeyPEM: try leafKey.serializeAsPEM().pemString
    )
  }

  private static func ipBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 {
      return withUnsafeBytes(of: &v4) { Array($0) }
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 {
      return withUnsafeBytes(of: &v6) { Array($0) }
    }
    return nil
  }
}

/// A certificate could not be made or read.
public struct CertificateError: Error, Sendable, CustomStringConvertible {
  /// What went wrong.
  public var message: String
  public var description: String { message }
}

/// The identity a certificate asserts: its subject's common name and organizational unit.
public struct CertificateIdentity: Sendable, Hashable {
  /// The holder's name (CN).
  public var name: String
  /// The holder's role (OU), if the certificate has one Hourglass knows.
  public var role: CertificateRole?

  /// Reads the identity from a DER-encoded certificate.
  public init(derEncoded bytes: [UInt8]) throws {
    let certificate = try Certificate(derEncoded: bytes)
    var name: String?
    var role: CertificateRole?
    for rdn in certificate.subject {
      for attribute in rdn {
        switch attribute.type {
        case .RDNAttributeType.commonName: name = String(describing: attribute.value)
        case .RDNAttributeType.organizationalUnitName: role = CertificateRole(rawValue: String(describing: attribute.value))
        default: break
        }
      }
    }
    guard let name else { throw CertificateError(message: "the certificate's subject has no common name") }
    self.name = name
    self.role = role
  }
}
