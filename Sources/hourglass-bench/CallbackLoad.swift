import Foundation
import HourglassRPC
import HourglassTransport
import NIOCore
import SwiftProtobuf

/// Keeps `inFlight` unary calls outstanding on one connection until `end`, timing each: calls
/// made and completed on the connection's event loop by callbacks (`RPCClient.unary(…,
/// completion:)`), with no task per call. The load generator of the loop-native rows.
///
/// Unchecked: everything mutable is touched only on the connection's event loop, where the
/// calls start and complete.
final class CallbackLoad<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>: @unchecked Sendable {
  let client: RPCClient
  let loop: any EventLoop
  let method: MethodDescriptor
  let makeRequest: () -> Request
  let end: NIODeadline
  let done: EventLoopPromise<[Duration]>
  private var samples: [Duration] = []
  private var outstanding = 0

  init(transport: RPCTLSConnection, method: MethodDescriptor, end: NIODeadline, makeRequest: @escaping () -> Request) {
    self.client = RPCClient(transport: transport)
    self.loop = transport.eventLoop
    self.method = method
    self.makeRequest = makeRequest
    self.end = end
    self.done = transport.eventLoop.makePromise()
    samples.reserveCapacity(1_000_000)
  }

  /// Runs `inFlight` callback calls on each connection (each already open) until `seconds`
  /// have passed; every call's latency, and the process's CPU time over the run.
  static func run(
    _ transports: [RPCTLSConnection], method: MethodDescriptor, inFlight: Int, seconds: Double, makeRequest: @escaping () -> Request
  ) async throws -> LoadResult {
    let start = ContinuousClock.now
    let cpuAtStart = processCPUSeconds()
    let end = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
    let loads = transports.map { CallbackLoad(transport: $0, method: method, end: end, makeRequest: makeRequest) }
    for load in loads {
      load.loop.execute { load.start(inFlight: inFlight) }
    }
    var all: [Duration] = []
    for load in loads { all += try await load.done.futureResult.get() }
    return LoadResult(latencies: all, elapsed: ContinuousClock.now - start, cpuSeconds: processCPUSeconds() - cpuAtStart)
  }

  private func start(inFlight: Int) {
    for _ in 0..<inFlight { call() }
  }

  private func call() {
    let started = NIODeadline.now()
    outstanding += 1
    client.unary(method, request: makeRequest(), responseType: Response.self) { result in
      let now = NIODeadline.now()
      self.outstanding -= 1
      if case .failure(let error) = result {
        self.done.fail(error)
        return
      }
      self.samples.append(.nanoseconds(Int64(now.uptimeNanoseconds - started.uptimeNanoseconds)))
      if now < self.end {
        self.call()
      } else if self.outstanding == 0 {
        self.done.succeed(self.samples)
      }
    }
  }
}
