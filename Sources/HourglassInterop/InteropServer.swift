import Foundation
import HourglassCertificates
import HourglassRPC
import HourglassTransport
import Logging
import ServiceLifecycle

/// Certificates for an interop run: a CA, a server certificate for `localhost` / 127.0.0.1
/// and a user certificate for `alice`, as PEM text, and a way to write them to files for
/// clients that read files (the C client).
public struct InteropPKI: Sendable {
  public let ca: DevelopmentCA
  public let server: IssuedCertificate
  public let user: IssuedCertificate

  /// Makes a fresh CA and its certificates.
  public init(caName: String = "Interop CA", userName: String = "alice") throws {
    ca = try DevelopmentCA(name: caName)
    server = try ca.issue(name: "coordinator-1", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
    user = try ca.issue(name: userName, role: .user)
  }

  /// The server's TLS credentials.
  public var serverCredentials: TLSCredentials {
    TLSCredentials(trustedCAPEM: ca.authority.certificatePEM, certificatePEM: server.certificatePEM, privateKeyPEM: server.privateKeyPEM)
  }

  /// Paths of the files ``write(to:)`` makes.
  public struct Files: Sendable {
    public var ca: String
    public var certificate: String
    public var key: String
    public var serverCertificate: String
    public var serverKey: String

    public init(ca: String, certificate: String, key: String, serverCertificate: String, serverKey: String) {
      self.ca = ca
      self.certificate = certificate
      self.key = key
      self.serverCertificate = serverCertificate
      self.serverKey = serverKey
    }
  }

  /// Writes ca.pem, user.pem, user-key.pem, server.pem and server-key.pem into `directory`.
  @discardableResult
  public func write(to directory: String) throws -> Files {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    func put(_ name: String, _ text: String) throws -> String {
      let path = (directory as NSString).appendingPathComponent(name)
      try text.write(toFile: path, atomically: true, encoding: .utf8)
      // Private keys for the owner only, throwaway as they are.
      if name.hasSuffix("-key.pem") { try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path) }
      return path
    }
    return Files(
      ca: try put("ca.pem", ca.authority.certificatePEM),
      certificate: try put("user.pem", user.certificatePEM),
      key: try put("user-key.pem", user.privateKeyPEM),
      serverCertificate: try put("server.pem", server.certificatePEM),
      serverKey: try put("server-key.pem", server.privateKeyPEM)
    )
  }
}

/// Serves a router over `hourglass/1` + TLS on a loopback port, the way a coordinator does.
public enum InteropServer {
  /// Runs a server on 127.0.0.1 (a free port) for the life of `body`, which gets the port.
  public static func with<T: Sendable>(
    router: RPCRouter,
    credentials: TLSCredentials,
    port: Int = 0,
    connection: RPCConnectionHandler.Configuration = .defaults,
    _ body: (Int) async throws -> T
  ) async throws -> T {
    var logger = Logger(label: "hourglass.interop.server")
    logger.logLevel = .warning
    let tls = RPCTLSServer(
      configuration: .init(
        host: "127.0.0.1", port: port, credentials: credentials, connection: connection, handshakeTimeout: .seconds(5), drainTimeout: .seconds(2)),
      server: RPCServer(router: router, logger: logger),
      logger: logger
    )
    let group = ServiceGroup(services: [tls], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      do {
        let address = try await tls.localAddress()
        let result = try await body(address.port ?? 0)
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return result
      } catch {
        await group.triggerGracefulShutdown()
        try? await tasks.waitForAll()
        throw error
      }
    }
  }

  /// Runs a server until SIGTERM or SIGINT; calls `ready` with the port once listening.
  public static func runUntilSignalled(router: RPCRouter, credentials: TLSCredentials, port: Int = 0, ready: @Sendable (Int) -> Void) async throws {
    var logger = Logger(label: "hourglass.interop.server")
    logger.logLevel = .warning
    let tls = RPCTLSServer(
      configuration: .init(host: "127.0.0.1", port: port, credentials: credentials, handshakeTimeout: .seconds(5), drainTimeout: .seconds(2)),
      server: RPCServer(router: router, logger: logger),
      logger: logger
    )
    let group = ServiceGroup(services: [tls], gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      let address = try await tls.localAddress()
      ready(address.port ?? 0)
      try await tasks.waitForAll()
    }
  }
}
