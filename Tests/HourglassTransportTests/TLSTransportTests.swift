import HourglassRPC
import HourglassTransport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SwiftProtobuf
import Synchronization
import Testing

extension TLSLoopbackTests {
  @Suite("TLS transport")
  struct TLSTransportTests {
    @Test("the caller's identity comes from its client certificate")
    func identity() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        let reply = try await client.unary(TestService.whoAmI, request: Google_Protobuf_StringValue(""), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "user:alice")
        await connection.close()
      }
    }

    @Test("1,000 concurrent streams on one connection")
    func manyStreams() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        let replies = try await withThrowingTaskGroup(of: String.self) { group in
          for i in 0..<1000 {
            group.addTask {
              try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("m\(i)"), responseType: Google_Protobuf_StringValue.self).value
            }
          }
          var all = Set<String>()
          for try await reply in group { all.insert(reply) }
          return all
        }
        #expect(replies.count == 1000)
        #expect(replies.contains("M999"))
        await connection.close()
      }
    }

    @Test("more concurrent calls than the server allows wait for a free stream instead of failing")
    func streamLimitQueues() async throws {
      var settings = RPCConnectionHandler.Configuration.defaults
      settings.settings.maxConcurrentStreams = 4
      try await TestServer.with(connection: settings) { server in
        let (client, connection) = try server.client()
        try await withThrowingTaskGroup(of: Void.self) { group in
          for i in 0..<50 {
            group.addTask {
              _ = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("m\(i)"), responseType: Google_Protobuf_StringValue.self)
            }
          }
          try await group.waitForAll()
        }
        await connection.close()
      }
    }

    @Test("a call waiting for a free stream fails DEADLINE_EXCEEDED when its deadline passes, not when a stream frees")
    func deadlineWhileWaitingForAStream() async throws {
      var settings = RPCConnectionHandler.Configuration.defaults
      settings.settings.maxConcurrentStreams = 1
      try await TestServer.with(connection: settings) { server in
        let (client, connection) = try server.client()
        // The only stream, held until the gate opens.
        let holding = Task {
          try await client.unary(TestService.gated, request: Google_Protobuf_StringValue("a"), responseType: Google_Protobuf_StringValue.self)
        }
        await server.probe.started.wait()
        do {
          _ = try await client.unary(
            TestService.unary, request: Google_Protobuf_StringValue("late"), responseType: Google_Protobuf_StringValue.self,
            options: CallOptions(timeout: .milliseconds(200)))
          Issue.record("the waiting call did not fail")
        } catch let error as RPCError {
          #expect(error.code == .deadlineExceeded)
          #expect(error.message.contains("before a stream was free"))
        }
        server.probe.gate.signal()
        #expect(try await holding.value.value == "done:a")
        await connection.close()
      }
    }

    @Test("a peer that sends and never reads is dropped once 32 MiB of output wait for it", .timeLimit(.minutes(3)))
    func peerThatNeverReads() async throws {
      try await TestServer.with { server in
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        try await raw.send(RawFrames.preface + RawFrames.emptySettings)
        try await raw.stopReading()
        // Each PING makes the server queue an 18-byte PONG this client does not read: 40 rounds of
        // 100,000 are 72 MB of them, over 32 MiB even with every kernel buffer between full.
        let pings = Array([[UInt8]](repeating: RawFrames.frame(.ping, stream: 0, payload: [1, 2, 3, 4, 5, 6, 7, 8]), count: 100_000).joined())
        for _ in 0..<40 {
          do { try await raw.send(pings) } catch { break }  // already dropped
        }
        // Reading again, the client finds the connection closed (it would read PONGs for ever
        // without the limit).
        try await raw.startReading()
        await raw.waitForClose()
        let (client, connection) = try server.client()
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("ok"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "OK")
        await connection.close()
      }
    }

    @Test("a PONG that answers nothing, malformed or not, is ignored: the connection serves on")
    func strayPongIgnored() async throws {
      try await TestServer.with { server in
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        let stray = RawFrames.frame(.pong, stream: 3, payload: [1, 2])
        let unasked = RawFrames.frame(.pong, stream: 0, payload: [1, 2, 3, 4, 5, 6, 7, 8])
        let ping = RawFrames.frame(.ping, stream: 0, payload: [9, 9, 9, 9, 9, 9, 9, 9])
        try await raw.send(RawFrames.preface + RawFrames.emptySettings + stray + unasked + ping)
        let frames = await raw.frames(until: .pong)
        #expect(frames.last?.type == .pong, "answered the PING after the stray PONGs: \(frames.map(\.type))")
        #expect(!frames.contains { $0.type == .goAway })
      }
    }

    @Test("an oversized frame gets GOAWAY RESOURCE_EXHAUSTED, and the server still serves others")
    func oversizedFrame() async throws {
      try await TestServer.with { server in
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        var header: [UInt8] = []
        header += [0x10, 0x00, 0x00, 0x00]  // 256 MiB payload announced
        header += [FrameType.message.rawValue, 0]
        header += [0, 0, 0, 1]
        try await raw.send(RawFrames.preface + RawFrames.emptySettings + header)
        let frames = await raw.framesUntilClose()
        let goAway = try #require(frames.last { $0.type == .goAway })
        let wire = try WireGoAway(serializedBytes: Array(goAway.payload.readableBytesView))
        #expect(wire.code == StatusCode.resourceExhausted.rawValue)
        #expect(wire.message.contains("exceeds the maximum frame size"))

        let (client, connection) = try server.client()
        let reply = try await client.unary(
          TestService.unary, request: Google_Protobuf_StringValue("still here"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "STILL HERE")
        await connection.close()
      }
    }

    // With one message of credit per stream, the client's later writes wait for credit, and
    // the server's answer (after the first request) arrives while one of them still waits: that
    // write must fail, so that the call ends with the answer instead of hanging.
    @Test("writes waiting for credit fail when the server ends the call; the call ends with its answer")
    func waitingWritesEndWithTheCall() async throws {
      var scarce = RPCConnectionHandler.Configuration.defaults
      scarce.settings.initialStreamCredit = 1
      try await TestServer.with(connection: scarce) { server in
        let (client, connection) = try server.client()
        let reply = try await client.sendStrings(TestService.firstOnly, (0..<10).map { "m\($0)" })
        #expect(reply == "m0")
        await connection.close()
      }
    }

    @Test(
      "a connection holding more than 64 MiB of unfinished messages gets GOAWAY RESOURCE_EXHAUSTED, others are served",
      arguments: [(40, 35), (90, 15)])
    func unfinishedMessagesBounded(streams: Int, fragmentsEach: Int) async throws {
      try await TestServer.with { server in
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        try await raw.send(RawFrames.preface + RawFrames.emptySettings)
        let headers = try WireRequestHeaders.with { $0.method = "/test.Echo/Unary" }.serializedBytes() as [UInt8]
        let fragment = [UInt8](repeating: 0x61, count: 60_000)
        // Each stream some way into a message it never finishes: 40 × 2.1 MB, or 90 × 0.9 MB
        // (under a megabyte each), over 64 MiB in all either way.
        for stream in stride(from: UInt32(1), through: UInt32(2 * streams - 1), by: 2) {
          var bytes = RawFrames.frame(.headers, stream: stream, payload: headers)
          for _ in 0..<fragmentsEach { bytes += RawFrames.frame(.message, flags: .more, stream: stream, payload: fragment) }
          do { try await raw.send(bytes) } catch { break }  // closed under us: the limit was hit
        }
        let frames = await raw.framesUntilClose()
        let goAway = try #require(frames.last { $0.type == .goAway })
        let wire = try WireGoAway(serializedBytes: Array(goAway.payload.readableBytesView))
        #expect(wire.code == StatusCode.resourceExhausted.rawValue)
        #expect(wire.message.contains("unfinished messages"))

        let (client, connection) = try server.client()
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("ok"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "OK")
        await connection.close()
      }
    }

    @Test("a server stream read only in part is ended by the client: 1,100 of them in a row do not exhaust the 1,024 streams")
    func partlyReadStreamsEnd() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        // Were each stream left open, the 1,025th call would wait for a free one (and the test
        // for its time limit).
        for call in 0..<1_100 {
          let first = try await client.serverStreaming(
            TestService.serverStream, request: Google_Protobuf_Int64Value(1_000_000), responseType: Google_Protobuf_Int64Value.self
          ) { responses in
            for try await value in responses { return value.value }
            return -1
          }
          try #require(first == 0, "call \(call)")
        }
        await connection.close()
      }
    }

    @Test("request metadata larger than a frame fails that call RESOURCE_EXHAUSTED before it is sent; the connection goes on")
    func requestMetadataTooLarge() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        do {
          _ = try await client.unary(
            TestService.unary, request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self,
            options: CallOptions(metadata: ["note": String(repeating: "m", count: 100_000)]))
          Issue.record("the call was sent")
        } catch let error as RPCError {
          #expect(error.code == .resourceExhausted)
        }
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("ok"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "OK")
        await connection.close()
      }
    }

    @Test("a status message larger than a frame is cut to fit: the call fails alone, the connection goes on")
    func statusMessageCutToFit() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        let huge = String(repeating: "é", count: 100_000)  // 200,000 bytes
        do {
          _ = try await client.unary(TestService.failingQuoting, request: Google_Protobuf_StringValue(huge), responseType: Google_Protobuf_StringValue.self)
          Issue.record("the call did not fail")
        } catch let error as RPCError {
          #expect(error.code == .invalidArgument)
          #expect(error.message.hasPrefix("not a name: éé"))
          #expect(error.message.hasSuffix("é…"))
          #expect(error.message.utf8.count <= 32_768)
        }
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("ok"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "OK")
        await connection.close()
      }
    }

    @Test("a unary request whose stream is never ended is refused INVALID_ARGUMENT 10 s after its message, not held")
    func unaryWithoutHalfClose() async throws {
      try await TestServer.with { server in
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        let headers = try WireRequestHeaders.with { $0.method = "/test.Echo/Unary" }.serializedBytes() as [UInt8]
        let request = try Google_Protobuf_StringValue("hi").serializedBytes() as [UInt8]
        // HEADERS and the whole MESSAGE, without END_STREAM: the handler used to wait for the
        // end, holding the request for as long as the connection lasted.
        try await raw.send(
          RawFrames.preface + RawFrames.emptySettings + RawFrames.frame(.headers, stream: 1, payload: headers)
            + RawFrames.frame(.message, stream: 1, payload: request))
        let frames = await raw.frames(until: .trailers)
        #expect(!frames.contains { $0.type == .message }, "no answer to a request that never ended")
        let trailers = try #require(frames.last)
        #expect(trailers.type == .trailers && trailers.streamID == 1)
        let wire = try WireTrailers(serializedBytes: Array(trailers.payload.readableBytesView))
        #expect(wire.code == StatusCode.invalidArgument.rawValue)
        #expect(wire.message.contains("did not end"))
      }
    }

    @Test("an oversized message resets only its stream")
    func oversizedMessage() async throws {
      var small = RPCConnectionHandler.Configuration.defaults
      small.settings.maxMessageSize = 1024
      try await TestServer.with(connection: small) { server in
        let (client, connection) = try server.client()
        await #expect {
          _ = try await client.unary(
            TestService.unary, request: Google_Protobuf_StringValue(String(repeating: "x", count: 5000)), responseType: Google_Protobuf_StringValue.self)
        } throws: { ($0 as? RPCError)?.code == .resourceExhausted }
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("ok"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "OK")
        await connection.close()
      }
    }

    @Test("random garbage closes only that connection", arguments: [UInt64(1), 2, 3, 4])
    func garbage(seed: UInt64) async throws {
      try await TestServer.with { server in
        var rng = SplitMix64(seed: seed)
        let garbage = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        try? await raw.send(garbage)
        await raw.waitForClose()
        // And garbage after a valid start.
        let raw2 = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        try? await raw2.send(RawFrames.preface + RawFrames.emptySettings + garbage)
        await raw2.waitForClose()

        let (client, connection) = try server.client()
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("fine"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "FINE")
        await connection.close()
      }
    }

    @Test("a client certificate from another CA is refused")
    func otherCA() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client(credentials: TestPKI.intruderCredentials)
        // TLS 1.3 reports the refusal at the client's first read: the call must fail.
        await #expect {
          _ = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("let me in"), responseType: Google_Protobuf_StringValue.self)
        } throws: { ($0 as? RPCError)?.code == .unavailable }
        await connection.close()
      }
    }

    @Test("a client without a certificate is refused")
    func noCertificate() async throws {
      try await TestServer.with { server in
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv13
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(TestPKI.ca.authority.certificatePEM.utf8)))
        configuration.applicationProtocols = ["hourglass/1"]
        let raw = try await RawTLSClient.connect(port: server.port, configuration: configuration, serverName: "localhost")
        try? await raw.send(RawFrames.preface + RawFrames.emptySettings)
        let frames = await raw.framesUntilClose()
        #expect(frames.isEmpty)
      }
    }

    @Test("a TLS 1.2-only client is refused")
    func tls12() async throws {
      try await TestServer.with { server in
        var configuration = try RawTLSClient.standardConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv12
        let raw = try await RawTLSClient.connect(port: server.port, configuration: configuration, serverName: "localhost")
        try? await raw.send(RawFrames.preface + RawFrames.emptySettings)
        let frames = await raw.framesUntilClose()
        #expect(frames.isEmpty)
      }
    }

    @Test("a server certificate that does not name the host is refused")
    func wrongHostname() async throws {
      let dnsOnly = TLSCredentials(
        trustedCAPEM: TestPKI.ca.authority.certificatePEM, certificatePEM: TestPKI.dnsOnlyServer.certificatePEM,
        privateKeyPEM: TestPKI.dnsOnlyServer.privateKeyPEM)
      try await TestServer.with(credentials: dnsOnly) { server in
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let transport = try RPCTLSConnection(
          configuration: .init(host: "127.0.0.1", port: server.port, serverName: "localhost", credentials: TestPKI.aliceCredentials), logger: logger)
        await #expect {
          _ = try await RPCClient(transport: transport).unary(
            TestService.unary, request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self)
        } throws: { ($0 as? RPCError)?.code == .unavailable }
      }
    }

    @Test("a call made from the connection's own event loop to a port nobody listens on fails UNAVAILABLE, every time")
    func refusedFromTheLoop() async throws {
      var logger = Logger(label: "test")
      logger.logLevel = .critical
      // A port that was free a moment ago: connecting is refused at once, which on the loop can
      // complete the attempt before the caller has finished starting it.
      let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
      let port = try #require(listener.localAddress?.port)
      try await listener.close()
      let transport = try RPCTLSConnection(
        configuration: .init(host: "127.0.0.1", port: port, credentials: TestPKI.aliceCredentials), logger: logger)
      let client = RPCClient(transport: transport)
      let calling = Task(executorPreference: transport.executor) { () -> [StatusCode?] in
        var codes: [StatusCode?] = []
        for _ in 0..<20 {
          do {
            _ = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self)
            codes.append(nil)
          } catch {
            codes.append((error as? RPCError)?.code)
          }
        }
        return codes
      }
      let outcomes = await calling.value
      #expect(outcomes == Array(repeating: StatusCode.unavailable, count: 20))
    }

    @Test("a connection that never sends SETTINGS is closed at the deadline")
    func settingsTimeout() async throws {
      var quick = RPCConnectionHandler.Configuration.defaults
      quick.settingsTimeout = .milliseconds(200)
      try await TestServer.with(connection: quick) { server in
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        // A loaded machine can hold this task past the deadline before it sends: then the
        // server has closed already, the send fails, and what the server sent is still read.
        try? await raw.send(RawFrames.preface)
        let frames = await raw.framesUntilClose()
        let goAway = try #require(frames.last { $0.type == .goAway })
        let wire = try WireGoAway(serializedBytes: Array(goAway.payload.readableBytesView))
        #expect(wire.code == StatusCode.deadlineExceeded.rawValue)
      }
    }

    @Test("keepalive: a peer that stops answering PINGs is dropped")
    func keepalive() async throws {
      var pinging = RPCConnectionHandler.Configuration.defaults
      pinging.keepaliveInterval = .milliseconds(100)
      pinging.keepaliveTimeout = .milliseconds(200)
      try await TestServer.with(connection: pinging) { server in
        // The raw client completes the handshake but never answers a PING.
        let raw = try await RawTLSClient.connect(port: server.port, configuration: try RawTLSClient.standardConfiguration())
        // As in the SETTINGS deadline test, the server may have dropped the peer before the send.
        try? await raw.send(RawFrames.preface + RawFrames.emptySettings)
        let frames = await raw.framesUntilClose()
        #expect(frames.contains { $0.type == .ping })
      }
    }

    @Test("the server stops only after a handler that outlived its connection has returned")
    func stopWaitsForHandlers() async throws {
      let probe = Probe()
      var logger = Logger(label: "test.server")
      logger.logLevel = .critical
      let tls = RPCTLSServer(
        configuration: .init(host: "127.0.0.1", port: 0, credentials: TestPKI.serverCredentials, drainTimeout: .milliseconds(100)),
        server: RPCServer(router: TestService.router(probe: probe), logger: logger),
        logger: logger
      )
      let group = ServiceGroup(services: [tls], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
      let stopped = Mutex(false)
      let running = Task {
        try await group.run()
        stopped.withLock { $0 = true }
      }
      let server = TestServer(port: try await tls.localAddress().port!, group: group, probe: probe)
      let (client, connection) = try server.client()
      let call = await server.gatedCallDuringDrain(client)
      // The drain gives up after 100 ms and closes the connection under the call, whose handler
      // (it ignores cancellation) runs on: the server must not stop before it returns. That the
      // server has not stopped is checked by waiting a while for it, then the handler is let go.
      _ = await call.result
      // Not a wait for an event: a window in which a server stopping too early would show.
      try await Task.sleep(for: .milliseconds(300))
      let stoppedEarly = stopped.withLock { $0 }
      #expect(!stoppedEarly, "the server stopped while a handler was still running")
      probe.gate.signal()
      try await running.value
      #expect(probe.gatedReturned.withLock { $0 })
      await connection.close()
    }

    @Test("GOAWAY drain lets in-flight calls finish and refuses new ones")
    func goAwayDrain() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        let inFlight = await server.gatedCallDuringDrain(client)
        // New calls are refused once the drain has begun (polling with real calls, no sleeps).
        var refused = false
        for _ in 0..<10_000 where !refused {
          do {
            _ = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("late"), responseType: Google_Protobuf_StringValue.self)
          } catch let error as RPCError {
            #expect(error.code == .unavailable)
            refused = true
          }
        }
        #expect(refused)
        // The call accepted before the GOAWAY still completes normally.
        server.probe.gate.signal()
        let reply = try await inFlight.value
        #expect(reply.value == "done:a")
        await connection.close()
      }
    }
  }
}

/// A small seeded generator so that failures reproduce.
struct SplitMix64: RandomNumberGenerator {
  private var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49EB_133D_11EB
    return z ^ (z >> 31)
  }
}
