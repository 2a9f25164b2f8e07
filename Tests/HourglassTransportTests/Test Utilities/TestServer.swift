import HourglassRPC
import HourglassTransport
import Logging
import NIOCore
import ServiceLifecycle
import SwiftProtobuf

/// A TLS server on a free loopback port, running in a `ServiceGroup` for the life of `body`.
struct TestServer {
  let port: Int
  let group: ServiceGroup
  let probe: Probe

  static func with<T: Sendable>(
    connection: RPCConnectionHandler.Configuration = .defaults,
    // Both generous: a full parallel run starts several PostgreSQL servers at once, and on a
    // slow 2-core machine a handshake took over 5 s there, and a test polling during a drain
    // outlasted a 2 s drain. No test here waits for either deadline: a drain ends when its
    // calls do.
    handshakeTimeout: TimeAmount = .seconds(60),
    drainTimeout: TimeAmount = .seconds(60),
    credentials: TLSCredentials = TestPKI.serverCredentials,
    _ body: (TestServer) async throws -> T
  ) async throws -> T {
    let probe = Probe()
    var logger = Logger(label: "test.server")
    logger.logLevel = .warning
    let server = RPCServer(router: TestService.router(probe: probe), logger: logger)
    let tls = RPCTLSServer(
      configuration: .init(
        host: "127.0.0.1", port: 0, credentials: credentials, connection: connection, handshakeTimeout: handshakeTimeout, drainTimeout: drainTimeout),
      server: server,
      logger: logger
    )
    let group = ServiceGroup(services: [tls], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      let address = try await tls.localAddress()
      let result = try await body(TestServer(port: address.port!, group: group, probe: probe))
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
      return result
    }
  }

  func client(
    credentials: TLSCredentials = TestPKI.aliceCredentials, connection: RPCConnectionHandler.Configuration = .defaults
  ) throws -> (RPCClient, RPCTLSConnection) {
    var logger = Logger(label: "test.client")
    logger.logLevel = .warning
    let transport = try RPCTLSConnection(
      configuration: .init(host: "127.0.0.1", port: port, credentials: credentials, connection: connection, connectTimeout: .seconds(60)),
      logger: logger
    )
    return (RPCClient(transport: transport), transport)
  }
}

extension TestServer {
  /// Starts a call of the gated method (its handler waits for `probe.gate`, ignoring
  /// cancellation), waits until the handler runs, then begins the server's graceful shutdown.
  /// Returns the call, which ends once the test opens the gate.
  func gatedCallDuringDrain(_ client: RPCClient) async -> Task<Google_Protobuf_StringValue, any Error> {
    let call = Task {
      try await client.unary(TestService.gated, request: Google_Protobuf_StringValue("a"), responseType: Google_Protobuf_StringValue.self)
    }
    await probe.started.wait()
    await group.triggerGracefulShutdown()
    return call
  }
}
