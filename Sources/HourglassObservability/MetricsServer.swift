import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The HTTP listener Prometheus scrapes: `GET /metrics` answers the registry in the text
/// exposition format (`text/plain; version=0.0.4`); every other path is 404, every other method
/// on `/metrics` 405. Each response closes its connection.
///
/// A `Service`: ``bind(host:port:registry:logger:)`` binds at once (so a taken port fails
/// start-up, and ``port`` is known before `run()`); `run()` serves until graceful shutdown,
/// then stops accepting and lets requests in flight finish. Connections idle for `idleTimeout`
/// (ten seconds by default) are closed, so shutdown never waits longer than that on a silent
/// client.
///
/// ```swift
/// let registry = PrometheusCollectorRegistry()
/// let coordinator = try Coordinator(..., metricsFactory: HourglassMetrics.makeFactory(registry: registry))
/// let metrics = try await MetricsServer.bind(host: "127.0.0.1", port: 9464, registry: registry, logger: logger)
/// let group = ServiceGroup(services: [coordinator, metrics], ...)
/// ```
public final class MetricsServer: Service, Sendable {
  private typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

  private let channel: NIOAsyncChannel<Connection, Never>
  private let registry: PrometheusCollectorRegistry
  private let logger: Logger

  /// The address the listener is bound to.
  public let localAddress: SocketAddress

  /// The bound port (useful after binding port 0).
  public var port: Int { localAddress.port ?? 0 }

  private init(channel: NIOAsyncChannel<Connection, Never>, registry: PrometheusCollectorRegistry, logger: Logger) throws {
    self.channel = channel
    self.registry = registry
    self.logger = logger
    guard let address = channel.channel.localAddress else {
      throw MetricsServerError(message: "the metrics listener has no local address")
    }
    self.localAddress = address
  }

  /// Binds the listener; call `run()` (or hand it to a `ServiceGroup`) to serve.
  /// - Parameters:
  ///   - host: the address to listen on, e.g. `127.0.0.1` or `0.0.0.0`.
  ///   - port: the port; 0 picks a free one (read it from ``port``).
  ///   - registry: what `/metrics` answers with.
  ///   - logger: where listener errors go.
  ///   - group: the event loops; the shared singleton by default.
  ///   - idleTimeout: how long a connection may send nothing before it is closed.
  public static func bind(
    host: String, port: Int, registry: PrometheusCollectorRegistry, logger: Logger,
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, idleTimeout: TimeAmount = .seconds(10)
  ) async throws -> MetricsServer {
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .bind(host: host, port: port) { child in
        child.eventLoop.makeCompletedFuture {
          try child.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
          try child.pipeline.syncOperations.addHandler(CloseOnIdleHandler())
          try child.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
          return try Connection(wrappingChannelSynchronously: child)
        }
      }
    let server = try MetricsServer(channel: channel, registry: registry, logger: logger)
    logger.info("metrics listener bound", metadata: ["hourglass.address": "\(server.localAddress)"])
    return server
  }

  /// Serves until graceful shutdown (or cancellation).
  public func run() async throws {
    let listener = channel.channel
    try await withGracefulShutdownHandler {
      try await channel.executeThenClose { connections in
        try await withThrowingDiscardingTaskGroup { group in
          for try await connection in connections {
            group.addTask { await self.serve(connection) }
          }
        }
      }
    } onGracefulShutdown: {
      listener.close(promise: nil)
    }
  }

  private func serve(_ connection: Connection) async {
    do {
      try await connection.executeThenClose { inbound, outbound in
        var head: HTTPRequestHead?
        for try await part in inbound {
          switch part {
          case .head(let requestHead):
            head = requestHead
          case .body:
            break
          case .end:
            guard let request = head else { return }
            try await respond(to: request, outbound)
            return
          }
        }
      }
    } catch {
      logger.debug("metrics connection failed", metadata: ["hourglass.error": "\(error)"])
    }
  }

  private func respond(to request: HTTPRequestHead, _ outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
    let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? request.uri
    let status: HTTPResponseStatus
    var headers = HTTPHeaders()
    var body = ByteBuffer()
    if path != "/metrics" {
      status = .notFound
      headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
      body.writeString("not found: the metrics are at /metrics\n")
    } else if request.method != .GET && request.method != .HEAD {
      status = .methodNotAllowed
      headers.add(name: "Allow", value: "GET, HEAD")
      headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
      body.writeString("method not allowed\n")
    } else {
      status = .ok
      headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
      var bytes: [UInt8] = []
      bytes.reserveCapacity(16_384)
      registry.emit(into: &bytes)
      body.writeBytes(bytes)
    }
    headers.add(name: "Content-Length", value: "\(body.readableBytes)")
    headers.add(name: "Connection", value: "close")
    try await outbound.write(.head(HTTPResponseHead(version: request.version, status: status, headers: headers)))
    if request.method != .HEAD {
      try await outbound.write(.body(.byteBuffer(body)))
    }
    try await outbound.write(.end(nil))
  }
}

/// The metrics listener could not start.
public struct MetricsServerError: Error, Sendable, CustomStringConvertible {
  /// What went wrong.
  public var message: String
  /// The message.
  public var description: String { message }
}

/// Closes a connection that sent nothing for the idle handler's read timeout.
private final class CloseOnIdleHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = NIOAny

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is IdleStateHandler.IdleStateEvent {
      context.close(promise: nil)
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }
}
