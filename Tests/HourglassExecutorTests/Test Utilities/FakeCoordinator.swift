import HourglassExecutor
import HourglassProto
import HourglassRPC
import Logging

/// A coordinator the test scripts: each executor stream shows up as a ``FakeConnection`` that
/// hands over what the executor sent and sends what the test tells it to.
final class FakeCoordinator: Sendable {
  let transport: InProcessTransport
  private let connections: Mailbox<FakeConnection>

  init() {
    let connections = Mailbox<FakeConnection>()
    var router = RPCRouter()
    router.registerBidirectional(MethodDescriptor(service: "hourglass.v1.ExecutorService", method: "Connect")) {
      (requests: RPCMessages<Hourglass_V1_ExecutorMessage>, writer: RPCWriter<Hourglass_V1_CoordinatorMessage>, _: ServerContext) in
      let connection = FakeConnection()
      connections.put(connection)
      defer { connection.inbox.finish() }
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask {
          for try await message in requests { connection.inbox.put(message) }
        }
        group.addTask {
          for await command in connection.commands {
            switch command {
            case .send(let message): try await writer.write(message)
            case .fail(let error): throw error
            }
          }
        }
        try await group.next()
        group.cancelAll()
      }
    }
    var logger = Logger(label: "fake-coordinator")
    logger.logLevel = .critical
    self.transport = InProcessTransport(server: RPCServer(router: router, logger: logger), peer: PeerIdentity(name: "executor-test", role: "executor"))
    self.connections = connections
  }

  /// The next stream an executor opens.
  func nextConnection() async -> FakeConnection {
    guard let connection = await connections.next() else { fatalError("the fake coordinator's connections ended") }
    return connection
  }

  /// Accepts the next stream: reads `Register`, answers `Registered`, reads the first credit.
  func accept(
    heartbeatInterval: Duration = .seconds(10), leaseDuration: Duration = .seconds(30), withdrawals: Bool = false
  ) async throws -> (FakeConnection, register: Hourglass_V1_Register, credits: UInt32) {
    let connection = await nextConnection()
    let register = try await connection.receive()
    guard case .register(let body) = register.kind else { throw FakeCoordinatorError("expected Register, got \(register)") }
    connection.send(
      .with {
        $0.registered = .with {
          $0.coordinatorID = "fake-coordinator"
          $0.heartbeatInterval.seconds = heartbeatInterval.components.seconds
          $0.leaseDuration.seconds = leaseDuration.components.seconds
          $0.withdrawals = withdrawals
        }
      })
    let credit = try await connection.receive()
    guard case .credit(let grant) = credit.kind else { throw FakeCoordinatorError("expected CreditGrant, got \(credit)") }
    return (connection, body, grant.credits)
  }
}

/// One executor stream, seen from the coordinator's side.
final class FakeConnection: Sendable {
  enum Command: Sendable {
    case send(Hourglass_V1_CoordinatorMessage)
    case fail(RPCError)
  }

  let inbox = Mailbox<Hourglass_V1_ExecutorMessage>()
  let commands: AsyncStream<Command>
  private let commandSink: AsyncStream<Command>.Continuation

  init() {
    (commands, commandSink) = AsyncStream<Command>.makeStream()
  }

  /// The executor's next message other than a heartbeat; throws if the stream ended.
  func receive(skippingHeartbeats: Bool = true) async throws -> Hourglass_V1_ExecutorMessage {
    guard let message = try await receiveOrEnd(skippingHeartbeats: skippingHeartbeats) else {
      throw FakeCoordinatorError("the executor's stream ended")
    }
    return message
  }

  /// The executor's next message other than a heartbeat, or nil when its stream has ended.
  /// Heartbeats skipped on the way are acknowledged (eligible), as a coordinator would, so a
  /// test that advances the clock far does not make the executor give the stream up.
  func receiveOrEnd(skippingHeartbeats: Bool = true) async throws -> Hourglass_V1_ExecutorMessage? {
    while let message = await inbox.next() {
      if skippingHeartbeats, case .heartbeat(let heartbeat) = message.kind {
        send(
          .with {
            $0.heartbeatAck = .with {
              $0.sequence = heartbeat.sequence
              $0.eligible = true
            }
          })
        continue
      }
      return message
    }
    return nil
  }

  func send(_ message: Hourglass_V1_CoordinatorMessage) {
    commandSink.yield(.send(message))
  }

  /// Ends the stream with an error status, as a coordinator crash would.
  func fail(_ error: RPCError = RPCError(code: .unavailable, message: "the fake coordinator went away")) {
    commandSink.yield(.fail(error))
  }
}

struct FakeCoordinatorError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}
