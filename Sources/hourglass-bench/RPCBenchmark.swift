import ArgumentParser
import Foundation
import HourglassCertificates
import HourglassRPC
import HourglassTransport
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SwiftProtobuf
import Synchronization

/// `hourglass-bench rpc`: unary calls over loopback TLS in three shapes, beside the ceiling of
/// bare length-prefixed frames over NIO + TLS with no RPC layer, measured in the same run.
struct RPCBenchmark: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "rpc",
    abstract: "Unary RPC throughput and latency over loopback TLS, against a bare TLS echo ceiling."
  )

  @Option(help: "Seconds to measure each shape.")
  var duration: Double = 5

  @Option(help: "Request payload bytes.")
  var requestBytes: Int = 200

  @Option(help: "Reply payload bytes.")
  var replyBytes: Int = 40

  @Flag(help: "Print JSON.")
  var json = false

  @Option(help: "The shapes to run, CONNECTIONSxIN_FLIGHT, comma-separated.")
  var shapes: String = "1x1,1x64,4x64"

  @Option(
    help:
      "Measure every row this many times, alternating the bare and RPC paths, and add a summary row per RPC row (median, lowest and highest ratio to the same round's bare rate): single runs on a shared machine move by ±25%."
  )
  var rounds: Int = 1

  @Option(help: "Which paths to measure: both, rpc or bare (one alone is for profiles, e.g. under callgrind).")
  var paths: Paths = .both

  enum Paths: String, ExpressibleByArgument {
    case both, rpc, bare
  }

  @Option(
    help:
      "Which RPC APIs to measure: async (handlers in tasks, calls awaited; rows rpc_tls_AxB), loop (handlers answered on the event loop, calls completed by callbacks; rows rpc_loop_tls_AxB), or both."
  )
  var apis: APIs = .both

  enum APIs: String, ExpressibleByArgument {
    case both, async, loop
  }

  func validate() throws {
    guard parsedShapes() != nil else { throw ValidationError("--shapes: expected e.g. 1x1,4x64, got \(shapes)") }
    guard rounds >= 1 else { throw ValidationError("--rounds: at least 1, got \(rounds)") }
  }

  /// `--shapes` as (connections, in flight) pairs; nil when malformed.
  func parsedShapes() -> [(Int, Int)]? {
    var parsed: [(Int, Int)] = []
    for shape in shapes.split(separator: ",") {
      let parts = shape.split(separator: "x")
      guard parts.count == 2, let connections = Int(parts[0]), let inFlight = Int(parts[1]), connections > 0, inFlight > 0 else { return nil }
      parsed.append((connections, inFlight))
    }
    return parsed.isEmpty ? nil : parsed
  }

  @Flag(help: "Run the server's handlers on the global concurrent executor instead of their connection's event loop.")
  var handlersOnGlobalExecutor = false

  @Flag(help: "Run the client's calling tasks on the global concurrent executor instead of preferring their connection's event loop.")
  var clientTasksOnGlobalExecutor = false

  @Flag(
    help:
      "Serve the RPC rows from event loops of their own (threads NIO-ELT-…; the client's stay on NIO-SGLTN-…), so that a profile tells the server's CPU from the client's."
  )
  var separateServerLoops = false

  @Option(
    help:
      "Where each connection's ends run, the same for every row: cross (client and server on different threads, as two processes on two cores) or same (both on one thread)."
  )
  var placement: Placement = .cross

  @Flag(
    help:
      "Also measure the bare echo with Swift tasks where the async API has them (a task per server answer, an awaited call per request; rows bare_tasks_tls_AxB, with their ratio to bare): what the task machinery alone costs; async-API rows then also give their ratio to it (ratio_to_bare_tasks)."
  )
  var bareTasks = false

  static let method = MethodDescriptor(service: "bench.Echo", method: "Unary")
  static let loopMethod = MethodDescriptor(service: "bench.Echo", method: "UnaryOnLoop")
  static let whereMethod = MethodDescriptor(service: "bench.Echo", method: "Where")

  func run() async throws {
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    let ca = try DevelopmentCA(name: "bench CA")
    let server = try ca.issue(name: "bench-server", role: .coordinator, dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
    let client = try ca.issue(name: "bench-client", role: .user)
    let serverCredentials = TLSCredentials(
      trustedCAPEM: ca.authority.certificatePEM, certificatePEM: server.certificatePEM, privateKeyPEM: server.privateKeyPEM)
    let clientCredentials = TLSCredentials(
      trustedCAPEM: ca.authority.certificatePEM, certificatePEM: client.certificatePEM, privateKeyPEM: client.privateKeyPEM)
    let shapes = parsedShapes()!
    let seconds = duration
    var report = BenchmarkReport(benchmark: "rpc")
    report.parameters = [
      "duration_s": "\(duration)", "request_bytes": "\(requestBytes)", "reply_bytes": "\(replyBytes)",
      "event_loop_threads": "\(System.coreCount)", "cores": "\(System.coreCount)",
      "handlers_on": handlersOnGlobalExecutor ? "global executor" : "event loop",
      "client_tasks_on": clientTasksOnGlobalExecutor ? "global executor" : "event loop",
      "server_loops": separateServerLoops ? "separate" : "shared with the client", "shapes": self.shapes, "paths": paths.rawValue,
      "apis": apis.rawValue, "bare_tasks": "\(bareTasks)", "rounds": "\(rounds)",
      "placement": separateServerLoops ? "separate server loops" : placement.rawValue,
    ]
    // Every connection's ends are placed the same way for every row (not with separate
    // server loops, which are other threads by construction).
    let placement: Placement? = separateServerLoops ? nil : self.placement

    // The ceiling: bare frames, served for the whole run.
    let bare = try await BareEcho.start(credentials: serverCredentials, replyBytes: replyBytes)
    var bareAccepts = bare.accepted.makeAsyncIterator()
    let bareTasksServer = bareTasks ? try await BareEcho.start(credentials: serverCredentials, replyBytes: replyBytes, tasks: true) : nil
    var bareTasksAccepts = bareTasksServer?.accepted.makeAsyncIterator()

    // The RPC path.
    var router = RPCRouter()
    let reply = Google_Protobuf_BytesValue.with { $0.value = Data(repeating: 0x2A, count: replyBytes) }
    router.registerUnary(Self.method) { (_: Google_Protobuf_BytesValue, _) in reply }
    router.registerUnaryOnEventLoop(Self.loopMethod) { (_: Google_Protobuf_BytesValue, _) in reply }
    // Which shared loop serves the connection (an index byte; 255 for another loop).
    router.registerUnaryOnEventLoop(Self.whereMethod) { (_: Google_Protobuf_BytesValue, _) in
      Google_Protobuf_BytesValue.with { $0.value = Data([UInt8(currentSharedLoopIndex() ?? 255)]) }
    }
    let serverLoops: MultiThreadedEventLoopGroup? = separateServerLoops ? MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount) : nil
    let tls = RPCTLSServer(
      configuration: .init(host: "127.0.0.1", port: 0, credentials: serverCredentials, handlersOnEventLoop: !handlersOnGlobalExecutor),
      server: RPCServer(router: router, logger: logger),
      group: serverLoops ?? MultiThreadedEventLoopGroup.singleton,
      logger: logger
    )
    let group = ServiceGroup(services: [tls], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
    let requestBytes = self.requestBytes
    let clientTasksOnLoop = !clientTasksOnGlobalExecutor
    let rounds = self.rounds
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      let port = try await tls.localAddress().port!
      // Per RPC row: each round's ratio to that round's bare rate, and CPU per call.
      var perRound: [String: [(ratio: Double, cpu: Double?)]] = [:]
      // Per async-API row, with --bare-tasks: each round's ratio to the bare echo with tasks,
      // the ceiling for a path that pays for the same tasks.
      var perRoundWithTasks: [String: [Double]] = [:]
      for round in 1...rounds {
        var bareRates: [String: Double] = [:]
        var bareTasksRates: [String: Double] = [:]
        for (connections, inFlight) in shapes where paths != .rpc {
          let result = try await BareEcho.load(
            port: bare.port, credentials: clientCredentials, connections: connections, inFlight: inFlight, requestBytes: requestBytes, seconds: seconds,
            placement: self.placement, accepted: &bareAccepts)
          let name = "bare_tls_\(connections)x\(inFlight)"
          bareRates[name] = result.rate
          report.results.append(Self.row(result, name, round: round, of: rounds))
          if let bareTasksServer {
            let withTasks = try await BareEcho.load(
              port: bareTasksServer.port, credentials: clientCredentials, connections: connections, inFlight: inFlight, requestBytes: requestBytes,
              seconds: seconds, placement: self.placement, accepted: &bareTasksAccepts!, tasks: true)
            let tasksName = "bare_tasks_tls_\(connections)x\(inFlight)"
            var row = Self.row(withTasks, tasksName, round: round, of: rounds)
            bareTasksRates["\(connections)x\(inFlight)"] = withTasks.rate
            if result.rate > 0 {
              row["ratio_to_bare"] = .double(withTasks.rate / result.rate)
              perRound[tasksName, default: []].append((withTasks.rate / result.rate, withTasks.cpuMicrosPerCall))
            }
            report.results.append(row)
          }
        }
        for (connections, inFlight) in shapes where paths != .bare {
          var measured: [(String, LoadResult)] = []
          let asyncName = "rpc_tls_\(connections)x\(inFlight)"
          if apis != .loop {
            let result = try await Self.rpcLoad(
              port: port, credentials: clientCredentials, connections: connections, placement: placement, inFlight: inFlight, requestBytes: requestBytes,
              seconds: seconds,
              tasksOnLoop: clientTasksOnLoop, logger: logger
            )
            measured.append((asyncName, result))
          }
          if apis != .async {
            let result = try await Self.loopLoad(
              port: port, credentials: clientCredentials, connections: connections, placement: placement, inFlight: inFlight, requestBytes: requestBytes,
              seconds: seconds,
              logger: logger
            )
            measured.append(("rpc_loop_tls_\(connections)x\(inFlight)", result))
          }
          for (name, result) in measured {
            var row = Self.row(result, name, round: round, of: rounds)
            if let ceiling = bareRates["bare_tls_\(connections)x\(inFlight)"], ceiling > 0 {
              row["ratio_to_bare"] = .double(result.rate / ceiling)
              perRound[name, default: []].append((result.rate / ceiling, result.cpuMicrosPerCall))
            }
            if name == asyncName, let withTasks = bareTasksRates["\(connections)x\(inFlight)"], withTasks > 0 {
              row["ratio_to_bare_tasks"] = .double(result.rate / withTasks)
              perRoundWithTasks[name, default: []].append(result.rate / withTasks)
            }
            report.results.append(row)
          }
        }
      }
      if rounds > 1 {
        for (name, values) in perRound.sorted(by: { $0.key < $1.key }) {
          report.results.append(Self.summary(name, values, ratiosToBareTasks: perRoundWithTasks[name] ?? []))
        }
      }
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
    try await bare.channel.close()
    try await bareTasksServer?.channel.close()
    try await serverLoops?.shutdownGracefully()
    report.print(json: json)
  }

  /// A measured row, with its round when there are several.
  static func row(_ result: LoadResult, _ name: String, round: Int, of rounds: Int) -> [String: BenchmarkValue] {
    var row = result.row(name)
    if rounds > 1 { row["round"] = .int(round) }
    return row
  }

  /// The rounds of one RPC row: the median, lowest and highest ratio to the same round's bare
  /// rate, the median CPU per call, and (for the async API with --bare-tasks) the median ratio
  /// to the bare echo with tasks.
  static func summary(_ name: String, _ values: [(ratio: Double, cpu: Double?)], ratiosToBareTasks: [Double] = []) -> [String: BenchmarkValue] {
    let ratios = values.map(\.ratio).sorted()
    var row: [String: BenchmarkValue] = [
      "name": .string(name + "_summary"), "rounds": .int(values.count),
      "ratio_to_bare_median": .double(median(ratios)), "ratio_to_bare_min": .double(ratios.first!), "ratio_to_bare_max": .double(ratios.last!),
    ]
    let cpu = values.compactMap(\.cpu).sorted()
    if !cpu.isEmpty { row["cpu_us_per_call_median"] = .double(median(cpu)) }
    if !ratiosToBareTasks.isEmpty { row["ratio_to_bare_tasks_median"] = .double(median(ratiosToBareTasks.sorted())) }
    return row
  }

  /// The middle value of sorted, non-empty `values` (the mean of the middle two for an even count).
  static func median(_ values: [Double]) -> Double {
    let middle = values.count / 2
    return values.count % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2
  }

  /// `count` connections to the server, placed as `placement` says (any way when nil), each
  /// warmed up with one call of `method` so that every measured call finds its connection open.
  static func openConnections(
    _ count: Int, placement: Placement?, port: Int, credentials: TLSCredentials, warmingUp method: MethodDescriptor,
    with request: Google_Protobuf_BytesValue, logger: Logger
  ) async throws -> [RPCTLSConnection] {
    var transports: [RPCTLSConnection] = []
    for index in 0..<count {
      let transport = try await placedConnection(index, placement) { loop in
        let transport = try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: credentials), group: loop, logger: logger)
        let served = try await RPCClient(transport: transport).unary(
          whereMethod, request: Google_Protobuf_BytesValue(), responseType: Google_Protobuf_BytesValue.self)
        return (transport, served.value.first.map(Int.init))
      } discard: { transport in
        await transport.close()
      }
      _ = try await RPCClient(transport: transport).unary(method, request: request, responseType: Google_Protobuf_BytesValue.self)
      transports.append(transport)
    }
    return transports
  }

  static func rpcLoad(
    port: Int, credentials: TLSCredentials, connections: Int, placement: Placement?, inFlight: Int, requestBytes: Int, seconds: Double, tasksOnLoop: Bool,
    logger: Logger
  ) async throws -> LoadResult {
    let request = Google_Protobuf_BytesValue.with { $0.value = Data(repeating: 0x11, count: requestBytes) }
    let transports = try await openConnections(
      connections, placement: placement, port: port, credentials: credentials, warmingUp: method, with: request, logger: logger)
    let result = try await TaskLoad<Google_Protobuf_BytesValue, Google_Protobuf_BytesValue>.run(
      transports, method: method, inFlight: inFlight, seconds: seconds, tasksOnLoop: tasksOnLoop, request: request)
    for transport in transports { await transport.close() }
    return result
  }
}

extension RPCBenchmark {
  /// The loop-native path: calls made and completed on each connection's event loop by
  /// callbacks, answered by a handler that runs on the server's loop; no task on either side,
  /// like the bare ceiling.
  static func loopLoad(
    port: Int, credentials: TLSCredentials, connections: Int, placement: Placement?, inFlight: Int, requestBytes: Int, seconds: Double, logger: Logger
  ) async throws -> LoadResult {
    let request = Google_Protobuf_BytesValue.with { $0.value = Data(repeating: 0x11, count: requestBytes) }
    let transports = try await openConnections(
      connections, placement: placement, port: port, credentials: credentials, warmingUp: loopMethod, with: request, logger: logger)
    let result = try await CallbackLoad<Google_Protobuf_BytesValue, Google_Protobuf_BytesValue>.run(
      transports, method: loopMethod, inFlight: inFlight, seconds: seconds, makeRequest: { request })
    for transport in transports { await transport.close() }
    return result
  }
}

/// Calls per second and latency percentiles of one load shape.
struct LoadResult {
  var latencies: [Duration]
  var elapsed: Duration
  /// CPU time (user + system, every thread of the process: client and server) spent while
  /// measuring; what a call costs when the machine is shared and the rate is noisy.
  var cpuSeconds: Double? = nil

  var rate: Double {
    Double(latencies.count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
  }

  func percentile(_ p: Double, sorted: [Duration]) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let index = min(sorted.count - 1, Int(Double(sorted.count) * p))
    let d = sorted[index]
    return Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
  }

  /// CPU time per call, in microseconds, when it was measured.
  var cpuMicrosPerCall: Double? {
    guard let cpuSeconds, !latencies.isEmpty else { return nil }
    return cpuSeconds * 1e6 / Double(latencies.count)
  }

  func row(_ name: String) -> [String: BenchmarkValue] {
    let sorted = latencies.sorted()
    var row: [String: BenchmarkValue] = [
      "name": .string(name),
      "calls": .int(latencies.count),
      "calls_per_s": .double(rate),
      "p50_us": .double(percentile(0.50, sorted: sorted)),
      "p99_us": .double(percentile(0.99, sorted: sorted)),
    ]
    if let cpuMicrosPerCall { row["cpu_us_per_call"] = .double(cpuMicrosPerCall) }
    return row
  }
}

/// The ceiling: a TLS 1.3 echo of length-prefixed frames, with no RPC layer at all.
enum BareEcho {
  final class EchoHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let replyBytes: Int
    init(replyBytes: Int) { self.replyBytes = replyBytes }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      context.write(wrapOutboundOut(BareEcho.frame(bytes: replyBytes, fill: 0x2A, allocator: context.channel.allocator)), promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) {
      context.flush()
    }
  }

  /// Keeps `inFlight` requests outstanding and times each reply.
  final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let request: ByteBuffer
    let inFlight: Int
    let end: NIODeadline
    var sent: [NIODeadline] = []
    var head = 0
    var samples: [Duration] = []
    let done: EventLoopPromise<[Duration]>
    var finished = false

    init(requestBytes: Int, inFlight: Int, end: NIODeadline, done: EventLoopPromise<[Duration]>) {
      self.request = BareEcho.frame(bytes: requestBytes, fill: 0x11)
      self.inFlight = inFlight
      self.end = end
      self.done = done
      samples.reserveCapacity(1_000_000)
    }

    func start(context: ChannelHandlerContext) {
      for _ in 0..<inFlight { send(context) }
      context.flush()
    }

    func send(_ context: ChannelHandlerContext) {
      sent.append(.now())
      context.write(wrapOutboundOut(request), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let now = NIODeadline.now()
      let t0 = sent[head]
      head += 1
      if head > 4096 {
        sent.removeFirst(head)
        head = 0
      }
      samples.append(.nanoseconds(Int64(now.uptimeNanoseconds - t0.uptimeNanoseconds)))
      if now < end {
        send(context)
      } else if sent.count - head == 0, !finished {
        finished = true
        done.succeed(samples)
      }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
      context.flush()
    }
  }

  /// Starts the echo server; `accepted` tells the shared loop (its index in ``sharedLoops``) of
  /// every connection it accepts, in order.
  ///
  /// With `tasks`, each request is answered from a task (``BareTaskEcho``).
  static func start(
    credentials: TLSCredentials, replyBytes: Int, tasks: Bool = false
  ) async throws -> (channel: any Channel, port: Int, accepted: AsyncStream<Int>) {
    let context = try NIOSSLContext(configuration: credentials.serverConfiguration())
    let (accepted, acceptedLoops) = AsyncStream.makeStream(of: Int.self)
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          acceptedLoops.yield(sharedLoops.firstIndex { $0 === channel.eventLoop } ?? -1)
          try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
          try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthFieldBasedFrameDecoder(lengthFieldLength: .four)))
          if tasks {
            try channel.pipeline.syncOperations.addHandler(BareTaskEcho.EchoHandler(replyBytes: replyBytes))
          } else {
            try channel.pipeline.syncOperations.addHandler(EchoHandler(replyBytes: replyBytes))
          }
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    return (channel, channel.localAddress!.port!, accepted)
  }

  /// Loads `connections` connections placed as `placement` says; `accepted` is the server's
  /// stream of accepted loops (``start(credentials:replyBytes:tasks:)``). With `tasks`, each
  /// call is awaited by one of `inFlight` tasks per connection (``BareTaskEcho``).
  static func load(
    port: Int, credentials: TLSCredentials, connections: Int, inFlight: Int, requestBytes: Int, seconds: Double, placement: Placement,
    accepted: inout AsyncStream<Int>.Iterator, tasks: Bool = false
  ) async throws -> LoadResult {
    if tasks {
      return try await loadWithTasks(
        port: port, credentials: credentials, connections: connections, inFlight: inFlight, requestBytes: requestBytes, seconds: seconds,
        placement: placement, accepted: &accepted)
    }
    let sslContext = try NIOSSLContext(configuration: credentials.clientConfiguration())
    let start = ContinuousClock.now
    let cpuAtStart = processCPUSeconds()
    let end = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
    var futures: [EventLoopFuture<[Duration]>] = []
    var channels: [any Channel] = []
    for index in 0..<connections {
      let done = sharedLoops[placement.loops(ofConnection: index).client].makePromise(of: [Duration].self)
      let channel = try await connect(index, placement, port: port, sslContext: sslContext, accepted: &accepted) {
        LoadHandler(requestBytes: requestBytes, inFlight: inFlight, end: end, done: done)
      }
      try await channel.eventLoop.submit {
        let handler = try channel.pipeline.syncOperations.handler(type: LoadHandler.self)
        let context = try channel.pipeline.syncOperations.context(handler: handler)
        handler.start(context: context)
      }.get()
      futures.append(done.futureResult)
      channels.append(channel)
    }
    var all: [Duration] = []
    for future in futures { all += try await future.get() }
    let elapsed = ContinuousClock.now - start
    let cpu = processCPUSeconds() - cpuAtStart
    for channel in channels { try? await channel.close() }
    return LoadResult(latencies: all, elapsed: elapsed, cpuSeconds: cpu)
  }
}

extension BareEcho {
  /// Opens connection `index` to the echo on `port`, placed as `placement` says, its frames
  /// handled by the handler `last` makes (on the connection's loop).
  static func connect(
    _ index: Int, _ placement: Placement, port: Int, sslContext: NIOSSLContext, accepted: inout AsyncStream<Int>.Iterator,
    last: @escaping @Sendable () -> any ChannelHandler
  ) async throws -> any Channel {
    try await placedConnection(index, placement) { loop in
      let channel = try await ClientBootstrap(group: loop)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: sslContext, serverHostname: nil))
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LengthFieldBasedFrameDecoder(lengthFieldLength: .four)))
            try channel.pipeline.syncOperations.addHandler(last())
          }
        }
        .connect(host: "127.0.0.1", port: port).get()
      return (channel, await accepted.next())
    } discard: { channel in
      try? await channel.close()
    }
  }

  /// One length-prefixed frame of `bytes` bytes of `fill`.
  static func frame(bytes: Int, fill: UInt8, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
    var frame = allocator.buffer(capacity: bytes + 4)
    frame.writeInteger(UInt32(bytes))
    frame.writeRepeatingByte(fill, count: bytes)
    return frame
  }

  /// ``load(port:credentials:connections:inFlight:requestBytes:seconds:placement:accepted:tasks:)``
  /// with awaited calls: `inFlight` tasks per connection, each preferring its connection's loop.
  static func loadWithTasks(
    port: Int, credentials: TLSCredentials, connections: Int, inFlight: Int, requestBytes: Int, seconds: Double, placement: Placement,
    accepted: inout AsyncStream<Int>.Iterator
  ) async throws -> LoadResult {
    let sslContext = try NIOSSLContext(configuration: credentials.clientConfiguration())
    var opened: [(channel: any Channel, handler: BareTaskEcho.CallHandler)] = []
    for index in 0..<connections {
      let channel = try await connect(index, placement, port: port, sslContext: sslContext, accepted: &accepted) {
        BareTaskEcho.CallHandler(requestBytes: requestBytes)
      }
      let handler = try await channel.eventLoop.submit {
        try channel.pipeline.syncOperations.handler(type: BareTaskEcho.CallHandler.self)
      }.get()
      opened.append((channel, handler))
    }
    let start = ContinuousClock.now
    let cpuAtStart = processCPUSeconds()
    let end = start + .milliseconds(Int64(seconds * 1000))
    let latencies = await withTaskGroup(of: [Duration].self) { calls in
      for (channel, handler) in opened {
        let executor = EventLoopTaskExecutor(loop: channel.eventLoop)
        for _ in 0..<inFlight {
          calls.addTask(executorPreference: executor) {
            var samples: [Duration] = []
            samples.reserveCapacity(100_000)
            while ContinuousClock.now < end {
              let t0 = ContinuousClock.now
              await handler.call()
              samples.append(ContinuousClock.now - t0)
            }
            return samples
          }
        }
      }
      var all: [Duration] = []
      for await samples in calls { all += samples }
      return all
    }
    let result = LoadResult(latencies: latencies, elapsed: ContinuousClock.now - start, cpuSeconds: processCPUSeconds() - cpuAtStart)
    for (channel, _) in opened { try? await channel.close() }
    return result
  }
}

extension Placement: ExpressibleByArgument {}
