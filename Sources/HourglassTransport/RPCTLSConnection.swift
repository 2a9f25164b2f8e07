import HourglassRPC
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// One multiplexed `hourglass/1` connection to a server over TLS 1.3, shared by every call.
///
/// Connects on first use, and again after the connection closes or the server sends GOAWAY;
/// a call refused because the server was going away is retried once on a new connection
/// (the server guarantees it did not start it).
public final class RPCTLSConnection: ClientTransport, Sendable {
  /// Where to connect and with what.
  public struct Configuration: Sendable {
    /// The server's host name or address.
    public var host: String
    /// The server's port.
    public var port: Int
    /// The name checked against the server's certificate; defaults to `host`.
    public var serverName: String?
    /// Certificates and the private CA.
    public var credentials: TLSCredentials
    /// Protocol limits and timers.
    public var connection: RPCConnectionHandler.Configuration
    /// How long connecting (TCP and TLS) may take.
    public var connectTimeout: TimeAmount

    /// Creates a configuration with default timers.
    public init(
      host: String, port: Int, serverName: String? = nil, credentials: TLSCredentials, connection: RPCConnectionHandler.Configuration = .defaults,
      connectTimeout: TimeAmount = .seconds(10)
    ) {
      self.host = host
      self.port = port
      self.serverName = serverName
      self.credentials = credentials
      self.connection = connection
      self.connectTimeout = connectTimeout
    }
  }

  /// An open connection; a class, so that each call copies one reference out of `state`.
  ///
  /// It also retries its callback calls that never started, on a fresh connection.
  /// Unchecked: `connection` is set once, before the object is shared, and weak references are
  /// safe to read from any thread.
  private final class Ready: UnaryCallRetrying, @unchecked Sendable {
    let channel: any Channel
    let opener: NIOClientStreamOpener
    /// The connection this belongs to (weak: the connection holds this in its state).
    weak var connection: RPCTLSConnection?

    init(channel: any Channel, opener: NIOClientStreamOpener) {
      self.channel = channel
      self.opener = opener
    }

    func retry(_ head: RequestHead, request: ByteBuffer, completion: @escaping @Sendable (Result<UnaryResponse, any Error>) -> Void) {
      guard let connection else {
        completion(.failure(RPCError(code: .unavailable, message: "the connection was closed by the client")))
        return
      }
      // As for the async call: the call never started; retry once on a fresh connection.
      connection.retire(channel)
      completeInTask(completion) {
        do {
          return try await connection.connection().opener.unary(head, request: request)
        } catch let refused as CallNotStarted {
          throw refused.error
        }
      }
    }
  }

  private enum State: Sendable {
    case idle
    case connecting(EventLoopFuture<Ready>)
    case ready(Ready)
    case closed
  }

  private let configuration: Configuration
  private let loop: any EventLoop
  private let logger: Logger
  private let sslContext: NIOSSLContext
  private let state = Mutex<State>(.idle)

  /// The executor of the event loop this connection runs on (every reconnection included).
  ///
  /// A task that makes many calls over this connection can prefer it
  /// (`Task(executorPreference: connection.executor)`, `withTaskExecutorPreference`): its calls
  /// then start and resume on the connection's own thread, with no thread hop either way. Only
  /// for tasks that do little besides calling: their other work also runs on the loop and
  /// delays every call on the connection while it runs.
  public let executor: any TaskExecutor

  /// Creates a connection; nothing is dialled until the first call.
  public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) throws {
    self.configuration = configuration
    self.loop = group.next()
    self.executor = EventLoopTaskExecutor(loop: loop)
    self.logger = logger
    self.sslContext = try NIOSSLContext(configuration: configuration.credentials.clientConfiguration())
  }

  public func openStream(_ head: RequestHead, firstMessage: ByteBuffer?, endStream: Bool) async throws -> RPCClientStream {
    let ready = try await connection(within: head.timeout)
    do {
      return try await ready.opener.openStream(head, firstMessage: firstMessage, endStream: endStream)
    } catch let error as RPCError where error.code == .unavailable {
      // The connection was going away or just closed: the call never started. Retry once.
      retire(ready.channel)
      let fresh = try await connection(within: head.timeout)
      return try await fresh.opener.openStream(head, firstMessage: firstMessage, endStream: endStream)
    }
  }

  public func unary(_ head: RequestHead, request: ByteBuffer) async throws -> UnaryResponse {
    let ready: Ready
    var head = head
    if let open = openConnection() {
      ready = open  // the usual case, without an async call
    } else {
      ready = try await connection(spending: &head)
    }
    do {
      return try await ready.opener.unary(head, request: request)
    } catch is CallNotStarted {
      // As for streams: the call never started. Retry once on a fresh connection, within the
      // call's deadline (the server is told what is left of it).
      retire(ready.channel)
      let fresh = try await connection(spending: &head)
      do {
        return try await fresh.opener.unary(head, request: request)
      } catch let refused as CallNotStarted {
        throw refused.error
      }
    }
  }

  /// The event loop this connection runs on (every reconnection included): the completions of
  /// ``unary(_:request:completion:)`` run on it once the connection is open.
  public var eventLoop: any EventLoop { loop }

  /// Makes a unary call without a task. On an open connection the call starts on its event
  /// loop (at once when called there) and `completion` runs on that loop; the first call, which
  /// connects, and a retry after the connection went away run in a task.
  public func unary(_ head: RequestHead, request: ByteBuffer, completion: @escaping @Sendable (Result<UnaryResponse, any Error>) -> Void) {
    guard let ready = openConnection() else {
      completeInTask(completion) { try await self.unary(head, request: request) }
      return
    }
    ready.opener.unary(head, request: request, notStarted: ready, completion: completion)
  }

  /// Sends GOAWAY and closes once open calls finish; later calls fail with UNAVAILABLE.
  public func close() async {
    let current: State = state.withLock { state in
      let old = state
      state = .closed
      return old
    }
    switch current {
    case .ready(let ready):
      ready.opener.startGracefulShutdown()
      try? await ready.channel.closeFuture.get()
    case .connecting(let future):
      if let ready = try? await future.get() {
        ready.opener.startGracefulShutdown()
        try? await ready.channel.closeFuture.get()
      }
    case .idle, .closed:
      break
    }
  }

  private func retire(_ channel: any Channel) {
    state.withLock { state in
      if case .ready(let ready) = state, ready.channel === channel { state = .idle }
    }
  }

  /// The connection, when it is open.
  private func openConnection() -> Ready? {
    state.withLock { state in
      if case .ready(let ready) = state, ready.channel.isActive { return ready }
      return nil
    }
  }

  /// ``connection(within:)`` within the call's deadline, which the wait then counts against:
  /// `head` keeps the time left, which is what the server is told.
  private func connection(spending head: inout RequestHead) async throws -> Ready {
    let started = ContinuousClock.now
    let ready = try await connection(within: head.timeout)
    if let timeout = head.timeout { head.timeout = max(.microseconds(1), timeout - (ContinuousClock.now - started)) }
    return ready
  }

  /// The open connection, connecting first if needed. With `limit`, the wait ends with
  /// DEADLINE_EXCEEDED when it passes (the connection attempt goes on for the calls after).
  private func connection(within limit: Duration? = nil) async throws -> Ready {
    enum Next { case use(Ready), wait(EventLoopFuture<Ready>), connect(EventLoopFuture<Ready>), fail }
    let next: Next = state.withLock { state in
      switch state {
      case .ready(let ready) where ready.channel.isActive:
        return .use(ready)
      case .connecting(let future):
        return .wait(future)
      case .closed:
        return .fail
      case .idle, .ready:
        let future = connect()
        state = .connecting(future)
        return .connect(future)
      }
    }
    if case .connect(let future) = next {
      // The attempt settles the state itself, whether or not anyone still waits for it (a caller
      // whose deadline passed has stopped waiting; a failure must not stay cached). Outside the
      // lock: on the loop, a future already failed runs this at once, and settling takes it.
      future.whenComplete { [weak self] result in self?.settle(future, result) }
    }
    switch next {
    case .use(let ready):
      return ready
    case .fail:
      throw RPCError(code: .unavailable, message: "the connection was closed by the client")
    case .wait(let future), .connect(let future):
      var waited = future
      if let limit {
        let promise = loop.makePromise(of: Ready.self)
        let timer = loop.scheduleTask(in: TimeAmount(limit)) {
          promise.fail(RPCError(code: .deadlineExceeded, message: "the call's deadline of \(limit) passed while connecting"))
        }
        future.whenComplete { result in
          timer.cancel()
          promise.completeWith(result)
        }
        waited = promise.futureResult
      }
      do {
        return try await waited.get()
      } catch let error as RPCError where error.code == .deadlineExceeded {
        // This call's limit, not the connection's failure: the attempt goes on for the others.
        throw error
      } catch {
        let failed = error as? ConnectionFailed ?? ConnectionFailed(underlying: error, duringTLSHandshake: false)
        throw RPCError(code: .unavailable, message: "cannot connect to \(configuration.host):\(configuration.port): \(failed)", cause: failed)
      }
    }
  }

  /// Records how connection attempt `future` ended, if it is still the current one.
  private func settle(_ future: EventLoopFuture<Ready>, _ result: Result<Ready, any Error>) {
    if case .success(let ready) = result { ready.connection = self }
    state.withLock { state in
      guard case .connecting(let current) = state, current === future else { return }
      switch result {
      case .success(let ready): state = .ready(ready)
      case .failure: state = .idle
      }
    }
  }

  private func connect() -> EventLoopFuture<Ready> {
    let configuration = self.configuration
    let sslContext = self.sslContext
    let logger = self.logger
    let loop = self.loop
    let handshakeDone = loop.makePromise(of: Ready.self)
    ClientBootstrap(group: loop)
      .connectTimeout(configuration.connectTimeout)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          let tls = try NIOSSLClientHandler(
            context: sslContext, serverHostname: configuration.serverName ?? (Self.isIPAddress(configuration.host) ? nil : configuration.host))
          try sync.addHandler(tls)
          try sync.addHandler(
            TLSHandshakeHandler(
              timeout: configuration.connectTimeout, logger: logger,
              // Failed first with the reason, so that the close below cannot hide it.
              failed: { handshakeDone.fail(ConnectionFailed(underlying: $0, duringTLSHandshake: true)) }
            ) { context, _ in
              let ops = context.pipeline.syncOperations
              let handler = RPCConnectionHandler(clientWith: configuration.connection, logger: logger)
              try ops.addHandler(handler)
              handshakeDone.succeed(Ready(channel: context.channel, opener: NIOClientStreamOpener(handler: handler, loop: context.eventLoop)))
            }
          )
          channel.closeFuture.whenComplete { _ in
            handshakeDone.fail(RPCError(code: .unavailable, message: "the connection closed during the TLS handshake"))
          }
        }
      }
      .connect(host: configuration.host, port: configuration.port)
      .whenFailure { error in handshakeDone.fail(error) }
    return handshakeDone.futureResult
  }

  private static func isIPAddress(_ host: String) -> Bool {
    (try? SocketAddress(ipAddress: host, port: 0)) != nil
  }
}

/// Why a connection could not be opened (the ``RPCError/cause`` of its UNAVAILABLE). No call was
/// sent on it, so any call may be tried again, unless TLS refused the peer: a CA, host name,
/// certificate or protocol that does not match does not mend itself.
public struct ConnectionFailed: Error, CustomStringConvertible {
  /// What failed: the TCP connection, or the TLS handshake (NIOSSL's error, a time limit, or
  /// ALPN).
  public var underlying: any Error
  /// Whether TCP connected and the TLS handshake then failed.
  public var duringTLSHandshake: Bool
  /// Whether TLS refused the peer (certificate verification, host name, protocol or ALPN), not
  /// merely lost the connection or ran out of time.
  public var refusedByTLS: Bool

  /// Creates the failure.
  public init(underlying: any Error, duringTLSHandshake: Bool) {
    self.underlying = underlying
    self.duringTLSHandshake = duringTLSHandshake
    self.refusedByTLS = duringTLSHandshake && Self.isRefusal(underlying)
  }

  /// A handshake error that says the peers disagree, rather than that the connection broke.
  static func isRefusal(_ error: any Error) -> Bool {
    if error is ALPNNotNegotiated || error is NIOSSLExtraError { return true }
    guard let error = error as? NIOSSLError else { return false }
    switch error {
    case .handshakeFailed(.sslError), .handshakeFailed(.unknownError), .cannotMatchULabel, .noCertificateToValidate, .unableToValidateCertificate:
      return true
    default:
      return false
    }
  }

  public var description: String {
    duringTLSHandshake ? "the TLS handshake failed: \(underlying)" : "\(underlying)"
  }

}
