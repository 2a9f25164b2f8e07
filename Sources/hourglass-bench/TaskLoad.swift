import HourglassRPC
import HourglassTransport
import SwiftProtobuf

/// Keeps `inFlight` unary calls outstanding on each connection until `seconds` have passed,
/// each made in turn by a task of its own and timed: the load generator of the async-API rows
/// (``CallbackLoad`` is the loop API's).
enum TaskLoad<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message> {
  /// Every call's latency, and the process's CPU time over the run. Each task starts from
  /// `request`, which `prepare` (when given) changes before each call (a fresh idempotency key).
  static func run(
    _ transports: [RPCTLSConnection], method: MethodDescriptor, inFlight: Int, seconds: Double, tasksOnLoop: Bool = true, request: Request,
    prepare: (@Sendable (inout Request) -> Void)? = nil
  ) async throws -> LoadResult {
    let start = ContinuousClock.now
    let cpuAtStart = processCPUSeconds()
    let end = start + .milliseconds(Int64(seconds * 1000))
    let latencies = try await withThrowingTaskGroup(of: [Duration].self) { calls in
      for transport in transports {
        let client = RPCClient(transport: transport)
        // Calling tasks that prefer their connection's event loop start and resume their calls
        // there, without a thread hop (as HourglassClient's callers can).
        let executor = tasksOnLoop ? transport.executor : nil
        for _ in 0..<inFlight {
          calls.addTask(executorPreference: executor) {
            var samples: [Duration] = []
            samples.reserveCapacity(100_000)
            var request = request
            while ContinuousClock.now < end {
              prepare?(&request)
              let t0 = ContinuousClock.now
              _ = try await client.unary(method, request: request, responseType: Response.self)
              samples.append(ContinuousClock.now - t0)
            }
            return samples
          }
        }
      }
      var all: [Duration] = []
      for try await samples in calls { all += samples }
      return all
    }
    return LoadResult(latencies: latencies, elapsed: ContinuousClock.now - start, cpuSeconds: processCPUSeconds() - cpuAtStart)
  }
}
