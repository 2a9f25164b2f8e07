import HourglassProto
import Logging
import Synchronization
import Testing

@testable import HourglassRPC

/// What a handler's ``ServerContext`` carries: read from the call's recorder for a served call,
/// held by itself when made by its public initializer.
@Suite("Server context")
struct ServerContextTests {
  private static let inTask = MethodDescriptor(service: "test.Context", method: "InTask")
  private static let onLoop = MethodDescriptor(service: "test.Context", method: "OnLoop")

  /// What `onCallFinished` saw, one line per call.
  private final class FinishedCalls: Sendable {
    let lines = Mutex<[String]>([])
  }

  /// The context as a handler saw it, in one line.
  private static func describe(_ context: ServerContext) -> String {
    let timeout = context.timeout.map { $0 > .zero ? "timeout" : "no time" } ?? "no timeout"
    return [context.method, context.metadata[text: "x-test"] ?? "-", context.peer?.description ?? "-", timeout].joined(separator: " | ")
  }

  /// A server whose two methods answer with `describe(context)` and note `seen` in the
  /// call's annotations; `finished` gets each call's method and annotation as the server's
  /// `onCallFinished` hook saw them.
  private static func server(finished: FinishedCalls) -> RPCServer {
    var router = RPCRouter()
    router.registerUnary(inTask) { (_: Hourglass_V1_GetRequest, context) in
      context.annotations["test.seen"] = "task"
      return Hourglass_V1_GetRequest.with { $0.taskID = describe(context) }
    }
    router.registerUnaryOnEventLoop(onLoop) { (_: Hourglass_V1_GetRequest, context) in
      context.annotations["test.seen"] = "loop"
      return Hourglass_V1_GetRequest.with { $0.taskID = describe(context) }
    }
    var logger = Logger(label: "test.context")
    logger.logLevel = .warning
    return RPCServer(router: router, logger: logger) { _, context, _, _ in
      let seen = context.annotations["test.seen"].map { "\($0)" } ?? "-"
      finished.lines.withLock { $0.append("\(context.method) \(seen)") }
    }
  }

  @Test("a handler's context has the call's method, metadata, caller and deadline; its annotations reach onCallFinished")
  func servedCall() async throws {
    let finished = FinishedCalls()
    let transport = InProcessTransport(server: Self.server(finished: finished), peer: PeerIdentity(name: "alice", role: "user"))
    let client = RPCClient(transport: transport)
    let options = CallOptions(timeout: .seconds(30), metadata: ["x-test": "hello"])
    for method in [Self.inTask, Self.onLoop] {
      let reply = try await client.unary(method, request: Hourglass_V1_GetRequest(), responseType: Hourglass_V1_GetRequest.self, options: options)
      #expect(reply.taskID == "\(method.path) | hello | user:alice | timeout")
    }
    let plain = try await client.unary(Self.inTask, request: Hourglass_V1_GetRequest(), responseType: Hourglass_V1_GetRequest.self)
    #expect(plain.taskID == "\(Self.inTask.path) | - | user:alice | no timeout")
    #expect(finished.lines.withLock { $0 } == ["\(Self.inTask.path) task", "\(Self.onLoop.path) loop", "\(Self.inTask.path) task"])
  }

  @Test("a context made by its initializer keeps what it was given; copies share its annotations")
  func madeByHand() {
    let context = ServerContext(method: "/a.B/C", metadata: ["x-test": "v"], peer: PeerIdentity(name: "bob", role: "executor"), timeout: .seconds(1))
    #expect(Self.describe(context) == "/a.B/C | v | executor:bob | timeout")
    let copy = context
    copy.annotations["k"] = "1"
    #expect(context.annotations["k"] == "1")
    #expect(ServerContext(method: "/a.B/C", metadata: [:], peer: nil, timeout: nil).annotations.metadata.isEmpty)
  }
}
