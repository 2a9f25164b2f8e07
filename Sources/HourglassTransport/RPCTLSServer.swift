import HourglassRPC
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Serves an ``RPCServer`` over TLS 1.3 on TCP: accepts connections, authenticates callers by
/// their client certificates, runs every stream in a task of its own on its connection's event
/// loop, and drains gracefully.
///
/// A `Service`: `run()` serves until the task is cancelled or graceful shutdown is triggered;
/// then it stops accepting, sends GOAWAY on every connection, lets accepted calls finish
/// (up to ``Configuration/drainTimeout``) and returns.
public final class RPCTLSServer: Service, Sendable {
  /// Where and how to listen.
  public struct Configuration: Sendable {
    /// The address to bind, e.g. `127.0.0.1` or `::`.
    public var host: String
    /// The port; 0 picks a free one (see ``RPCTLSServer/localAddress()``).
    public var port: Int
    /// Certificates and the private CA.
    public var credentials: TLSCredentials
    /// Protocol limits and timers per connection.
    public var connection: RPCConnectionHandler.Configuration
    /// How long a client has to finish the TLS handshake.
    public var handshakeTimeout: TimeAmount
    /// How long a drain may take before the remaining connections are closed.
    public var drainTimeout: TimeAmount
    /// Whether handlers run on their connection's event loop (the default: no thread hops per
    /// call) rather than on the global concurrent executor. Turn it off for handlers that do
    /// long stretches of synchronous work, which would stall the connections of that loop.
    public var handlersOnEventLoop: Bool

    /// Creates a configuration with default timers.
    public init(
      host: String, port: Int, credentials: TLSCredentials, connection: RPCConnectionHandler.Configuration = .defaults,
      handshakeTimeout: TimeAmount = .seconds(10), drainTimeout: TimeAmount = .seconds(30), handlersOnEventLoop: Bool = true
    ) {
      self.host = host
      self.port = port
      self.credentials = credentials
      self.connection = connection
      self.handshakeTimeout = handshakeTimeout
      self.drainTimeout = drainTimeout
      self.handlersOnEventLoop = handlersOnEventLoop
    }
  }

  private let configuration: Configuration
  private let server: RPCServer
  private let group: any EventLoopGroup
  private let logger: Logger
  /// The bound address (or why binding failed), and callers of `localAddress()` waiting for it.
  private let address = Mutex<(Result<SocketAddress, any Error>?, [CheckedContinuation<SocketAddress, any Error>])>((nil, []))
  private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

  /// Creates a server; nothing listens until ``run()``.
  public init(configuration: Configuration, server: RPCServer, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
    self.configuration = configuration
    self.server = server
    self.group = group
    self.logger = logger
  }

  /// The address the server listens on, once it does; throws the bind error if it cannot.
  public func localAddress() async throws -> SocketAddress {
    try await withCheckedThrowingContinuation { continuation in
      let known: Result<SocketAddress, any Error>? = address.withLock { state in
        if let bound = state.0 { return bound }
        state.1.append(continuation)
        return nil
      }
      if let known { continuation.resume(with: known) }
    }
  }

  private func settleAddress(_ result: Result<SocketAddress, any Error>) {
    let waiting = address.withLock { state in
      state.0 = result
      let waiting = state.1
      state.1 = []
      return waiting
    }
    for continuation in waiting { continuation.resume(with: result) }
  }

  public func run() async throws {
    let sslContext: NIOSSLContext
    do {
      sslContext = try NIOSSLContext(configuration: configuration.credentials.serverConfiguration())
    } catch {
      settleAddress(.failure(error))
      throw error
    }
    let runningCalls = RunningCalls()
    let server = self.server
    let connectionConfiguration = configuration.connection
    let handshakeTimeout = configuration.handshakeTimeout
    let handlersOnEventLoop = configuration.handlersOnEventLoop
    let logger = self.logger

    let bootstrap = ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 1024)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { [weak self] channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          try sync.addHandler(NIOSSLServerHandler(context: sslContext))
          try sync.addHandler(
            TLSHandshakeHandler(timeout: handshakeTimeout, logger: logger) { context, peer in
              // The connection handler splits the bytes into frames itself.
              let ops = context.pipeline.syncOperations
              // Each call runs in a task of its own, started here on the connection's event
              // loop and (by default) preferring that loop as its executor.
              let executor = handlersOnEventLoop ? EventLoopTaskExecutor(loop: context.eventLoop) : nil
              // Counted with the other calls of this event loop: a count shared by every loop
              // would bounce between their threads twice per call.
              let calls = runningCalls.calls(on: context.eventLoop)
              let callFinished: @Sendable () -> Void = { calls.finished() }
              try ops.addHandler(
                RPCConnectionHandler(serverWith: connectionConfiguration, peer: peer, logger: logger) { (stream: consuming RPCServerStream) in
                  calls.started()
                  server.serve(consume stream, executorPreference: executor, onLoop: handlersOnEventLoop, whenDone: callFinished)
                }
              )
            }
          )
          self?.track(channel)
        }
      }

    let listener: any Channel
    do {
      listener = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
    } catch {
      settleAddress(.failure(error))
      throw error
    }
    let local = listener.localAddress!
    settleAddress(.success(local))
    logger.info("listening", metadata: ["hourglass.address": "\(local)"])

    await withGracefulShutdownHandler {
      await withTaskCancellationHandler {
        try? await listener.closeFuture.get()
      } onCancel: {
        listener.close(promise: nil)
      }
    } onGracefulShutdown: {
      listener.close(promise: nil)
    }
    // No new connections: drain the open ones (closing a connection cancels the handlers of
    // its unfinished calls), then wait for the last handler to return.
    await drain()
    await runningCalls.waitUntilNoneRunning()
    logger.info("stopped", metadata: ["hourglass.address": "\(local)"])
  }

  private func track(_ channel: any Channel) {
    let id = ObjectIdentifier(channel)
    channels.withLock { $0[id] = channel }
    channel.closeFuture.whenComplete { [weak self] _ in
      _ = self?.channels.withLock { $0.removeValue(forKey: id) }
    }
  }

  /// Sends GOAWAY on every connection and waits (up to the drain timeout) for them to close.
  private func drain() async {
    let open = channels.withLock { Array($0.values) }
    for channel in open {
      channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
    }
    guard !open.isEmpty else { return }
    // At the deadline, connections still open are closed (which cancels their calls' handlers).
    // Waiting for a close future cannot be cancelled, so the deadline closes them rather than
    // abandoning the wait: a connection whose call never ends would otherwise hold the drain,
    // and the server, forever.
    let timeout = configuration.drainTimeout
    let deadline = Task {
      guard (try? await Task.sleep(for: .nanoseconds(timeout.nanoseconds))) != nil else { return }
      for channel in open { channel.close(promise: nil) }
    }
    for channel in open {
      try? await channel.closeFuture.get()
    }
    deadline.cancel()
    for channel in channels.withLock({ Array($0.values) }) {
      channel.close(promise: nil)
    }
  }
}

/// Counts the calls still running, so that ``RPCTLSServer/run()`` returns only after the
/// last one has ended: one ``LoopCalls`` per event loop.
private final class RunningCalls: Sendable {
  private let counts = Mutex<[ObjectIdentifier: LoopCalls]>([:])

  /// The count of the calls of connections on `loop`.
  func calls(on loop: any EventLoop) -> LoopCalls {
    counts.withLock { counts in
      if let existing = counts[ObjectIdentifier(loop)] { return existing }
      let created = LoopCalls()
      counts[ObjectIdentifier(loop)] = created
      return created
    }
  }

  /// Returns once no call is running on any loop (no new connection may arrive by then).
  func waitUntilNoneRunning() async {
    for loopCalls in counts.withLock({ Array($0.values) }) {
      await loopCalls.waitUntilNoneRunning()
    }
  }
}

/// The calls running on one event loop's connections (a call may end on another thread: an
/// answer from elsewhere).
///
/// Starting and finishing a call cost one atomic each, on a count that the loop's thread
/// nearly always has to itself; the lock is taken only once a waiter has said it waits, when
/// the count reaches zero.
private final class LoopCalls: Sendable {
  private let running = Atomic<Int>(0)
  private let waiting = Atomic<Bool>(false)
  private let idle = Mutex<CheckedContinuation<Void, Never>?>(nil)

  func started() {
    running.add(1, ordering: .relaxed)
  }

  func finished() {
    // Sequentially consistent, with the waiter's flag and read below: either this sees the
    // flag, or the waiter sees the count this left.
    guard running.subtract(1, ordering: .sequentiallyConsistent).newValue == 0, waiting.load(ordering: .sequentiallyConsistent) else { return }
    let waiter = idle.withLock { $0.take() }
    waiter?.resume()
  }

  func waitUntilNoneRunning() async {
    waiting.store(true, ordering: .sequentiallyConsistent)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let none: Bool = idle.withLock { idle in
        if running.load(ordering: .sequentiallyConsistent) == 0 { return true }
        idle = continuation
        return false
      }
      if none { continuation.resume() }
    }
  }
}
