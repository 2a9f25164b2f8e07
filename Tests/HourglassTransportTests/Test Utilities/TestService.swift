import HourglassRPC
import NIOPosix
import SwiftProtobuf
import Synchronization

/// A small service exercising every call type, built on protobuf's wrapper messages.
enum TestService {
  static let unary = MethodDescriptor(service: "test.Echo", method: "Unary")
  static let serverStream = MethodDescriptor(service: "test.Echo", method: "Count")
  static let clientStream = MethodDescriptor(service: "test.Echo", method: "Sum")
  static let bidi = MethodDescriptor(service: "test.Echo", method: "Chat")
  static let wait = MethodDescriptor(service: "test.Echo", method: "Wait")
  static let whoAmI = MethodDescriptor(service: "test.Echo", method: "WhoAmI")
  static let gated = MethodDescriptor(service: "test.Echo", method: "Gated")
  /// Client streaming that answers with the first request and reads no further.
  static let firstOnly = MethodDescriptor(service: "test.Echo", method: "FirstOnly")
  /// A unary handler in a task that throws FAILED_PRECONDITION.
  static let unaryFailing = MethodDescriptor(service: "test.Echo", method: "UnaryFailing")
  /// Throws INVALID_ARGUMENT quoting the whole request in its message.
  static let failingQuoting = MethodDescriptor(service: "test.Echo", method: "FailingQuoting")
  /// Answered on the connection's event loop: the reply says where the handler ran.
  static let onLoop = MethodDescriptor(service: "test.Echo", method: "OnLoop")
  /// Answered on the loop by throwing FAILED_PRECONDITION.
  static let onLoopFailing = MethodDescriptor(service: "test.Echo", method: "OnLoopFailing")
  /// Hands its responder to the test (`Probe.responders`), which answers it later.
  static let onLoopLater = MethodDescriptor(service: "test.Echo", method: "OnLoopLater")
  /// Drops its responder without answering.
  static let onLoopDropping = MethodDescriptor(service: "test.Echo", method: "OnLoopDropping")

  static func router(probe: Probe) -> RPCRouter {
    var router = RPCRouter()
    router.registerUnary(unary) { (request: Google_Protobuf_StringValue, _) in
      Google_Protobuf_StringValue(request.value.uppercased())
    }
    router.registerServerStreaming(serverStream) { (request: Google_Protobuf_Int64Value, writer: RPCWriter<Google_Protobuf_Int64Value>, _) in
      for i in 0..<request.value {
        try await writer.write(Google_Protobuf_Int64Value(i))
      }
    }
    router.registerClientStreaming(clientStream) { (requests: RPCMessages<Google_Protobuf_Int64Value>, _) in
      var sum: Int64 = 0
      for try await value in requests { sum += value.value }
      return Google_Protobuf_Int64Value(sum)
    }
    router.registerBidirectional(bidi) { (requests: RPCMessages<Google_Protobuf_StringValue>, writer: RPCWriter<Google_Protobuf_StringValue>, _) in
      for try await message in requests {
        try await writer.write(Google_Protobuf_StringValue("echo:" + message.value))
      }
    }
    router.registerUnary(wait) { (_: Google_Protobuf_StringValue, _) -> Google_Protobuf_StringValue in
      probe.started.signal()
      do {
        try await Task.sleep(for: .seconds(3600))
      } catch {
        probe.cancelled.signal()
        throw error
      }
      return Google_Protobuf_StringValue("never")
    }
    router.registerClientStreaming(firstOnly) { (requests: RPCMessages<Google_Protobuf_StringValue>, _) in
      for try await request in requests { return request }
      throw RPCError(code: .invalidArgument, message: "no request")
    }
    router.registerUnary(unaryFailing) { (_: Google_Protobuf_StringValue, _) -> Google_Protobuf_StringValue in
      throw RPCError(code: .failedPrecondition, message: "not now")
    }
    router.registerUnary(failingQuoting) { (request: Google_Protobuf_StringValue, _) -> Google_Protobuf_StringValue in
      throw RPCError(code: .invalidArgument, message: "not a name: \(request.value)")
    }
    router.registerUnary(whoAmI) { (_: Google_Protobuf_StringValue, context) in
      Google_Protobuf_StringValue(context.peer?.description ?? "anonymous")
    }
    router.registerUnary(gated) { (request: Google_Protobuf_StringValue, _) in
      probe.started.signal()
      // Not cancellable: the handler runs on until the test opens the gate.
      await probe.gate.wait()
      probe.gatedReturned.withLock { $0 = true }
      return Google_Protobuf_StringValue("done:" + request.value)
    }
    router.registerUnaryOnEventLoop(onLoop) { (request: Google_Protobuf_StringValue, _) in
      let place = MultiThreadedEventLoopGroup.currentEventLoop == nil ? "task" : "loop"
      return Google_Protobuf_StringValue(request.value.uppercased() + "@" + place)
    }
    router.registerUnaryOnEventLoop(onLoopFailing) { (_: Google_Protobuf_StringValue, _) -> Google_Protobuf_StringValue in
      throw RPCError(code: .failedPrecondition, message: "not now")
    }
    router.registerUnaryOnEventLoop(onLoopLater) { (request: Google_Protobuf_StringValue, _, responder: UnaryResponder<Google_Protobuf_StringValue>) in
      probe.responders.withLock { $0.append((request.value, responder)) }
      probe.started.signal()
    }
    router.registerUnaryOnEventLoop(onLoopDropping) { (_: Google_Protobuf_StringValue, _, _: UnaryResponder<Google_Protobuf_StringValue>) in
    }
    return router
  }
}

/// Signals a test waits on instead of sleeping.
final class Probe: Sendable {
  let started = Signal()
  let cancelled = Signal()
  let gate = Signal()
  /// Set when the gated handler returns.
  let gatedReturned = Mutex(false)
  /// The responders `onLoopLater` was given, with their requests.
  let responders = Mutex<[(String, UnaryResponder<Google_Protobuf_StringValue>)]>([])
}

/// A one-shot event: `wait()` returns once `signal()` has been called.
final class Signal: Sendable {
  private let state = Mutex<(Bool, [CheckedContinuation<Void, Never>])>((false, []))

  func signal() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.0 = true
      let waiters = state.1
      state.1 = []
      return waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  func wait() async {
    await withCheckedContinuation { continuation in
      let done = state.withLock { state -> Bool in
        if state.0 { return true }
        state.1.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }
}

extension Google_Protobuf_StringValue {
  init(_ value: String) {
    self.init()
    self.value = value
  }
}

extension Google_Protobuf_Int64Value {
  init(_ value: Int64) {
    self.init()
    self.value = value
  }
}

extension RPCClient {
  /// Sends `values` as the requests of a client-streaming call of `method` (which may be a
  /// unary method: its request then comes after its headers) and returns the reply's text.
  func sendStrings(_ method: MethodDescriptor, _ values: [String]) async throws -> String {
    try await clientStreaming(method, requestType: Google_Protobuf_StringValue.self, responseType: Google_Protobuf_StringValue.self) { writer in
      for value in values { try await writer.write(Google_Protobuf_StringValue(value)) }
    }.value
  }
}
