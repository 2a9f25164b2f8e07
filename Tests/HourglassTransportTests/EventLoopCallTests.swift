import HourglassRPC
import HourglassTransport
import Logging
import NIOCore
import SwiftProtobuf
import Synchronization
import Testing

/// Unary handlers that run on the connection's event loop, and unary calls completed by a
/// callback: over real TLS, where both run without a task, and over the in-process transport,
/// where the same code runs in tasks.
extension TLSLoopbackTests {
  @Suite("Calls handled and completed on the event loop")
  struct EventLoopCallTests {
    private func withInProcessClient<T: Sendable>(_ body: (RPCClient, Probe) async throws -> T) async throws -> T {
      let probe = Probe()
      var logger = Logger(label: "test")
      logger.logLevel = .warning
      let server = RPCServer(router: TestService.router(probe: probe), logger: logger)
      return try await body(RPCClient(transport: InProcessTransport(server: server, peer: PeerIdentity(name: "alice", role: "user"))), probe)
    }

    private func call(_ client: RPCClient, _ method: MethodDescriptor, _ text: String, timeout: Duration? = nil) async throws -> String {
      try await client.unary(
        method, request: Google_Protobuf_StringValue(text), responseType: Google_Protobuf_StringValue.self, options: CallOptions(timeout: timeout)
      ).value
    }

    /// A callback call's outcome, and whether its completion ran on `loop`.
    private func callbackCall(
      _ client: RPCClient, _ method: MethodDescriptor, _ text: String, loop: (any EventLoop)? = nil
    ) async -> (Result<String, RPCError>, onLoop: Bool) {
      await withCheckedContinuation { continuation in
        client.unary(method, request: Google_Protobuf_StringValue(text), responseType: Google_Protobuf_StringValue.self) { result in
          continuation.resume(returning: (result.map(\.value), loop?.inEventLoop ?? false))
        }
      }
    }

    @Test("over TLS a loop handler answers on the connection's event loop, without a task")
    func answeredOnLoop() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        #expect(try await call(client, TestService.onLoop, "hello") == "HELLO@loop")
        await connection.close()
      }
    }

    @Test(
      "an answer larger than the client's maximum message size fails the call with RESOURCE_EXHAUSTED, the connection serving on",
      arguments: [TestService.unary, TestService.onLoop])
    func answerTooLargeForThePeer(_ method: MethodDescriptor) async throws {
      try await TestServer.with { server in
        var configuration = RPCConnectionHandler.Configuration.defaults
        configuration.settings.maxMessageSize = 1024
        let (client, connection) = try server.client(connection: configuration)
        await #expect {
          _ = try await call(client, method, String(repeating: "a", count: 2000))
        } throws: { error in
          guard let error = error as? RPCError else { return false }
          return error.code == .resourceExhausted && error.message.contains("maximum message size of 1024")
        }
        #expect(try await call(client, method, "small").hasPrefix("SMALL"))
        await connection.close()
      }
    }

    @Test("in process the same handler runs in a task")
    func inProcessRunsInTask() async throws {
      try await withInProcessClient { client, _ in
        let reply = try await call(client, TestService.onLoop, "hello")
        #expect(reply == "HELLO@task")
      }
    }

    @Test("a loop handler's error reaches the client as its status")
    func thrownStatus() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        await #expect {
          _ = try await call(client, TestService.onLoopFailing, "x")
        } throws: { ($0 as? RPCError)?.code == .failedPrecondition && ($0 as? RPCError)?.message == "not now" }
        await connection.close()
      }
    }

    @Test("an answer given later from another thread reaches the client", arguments: [true, false])
    func answeredLater(overTLS: Bool) async throws {
      let body: @Sendable (RPCClient, Probe) async throws -> Void = { client, probe in
        let pending = Task { try await call(client, TestService.onLoopLater, "later") }
        await probe.started.wait()
        let (request, responder) = probe.responders.withLock { $0.removeFirst() }
        #expect(request == "later")
        // This test's task runs on the global executor, not on the connection's loop.
        responder.succeed(Google_Protobuf_StringValue("answered " + request))
        // A second answer is ignored.
        responder.fail(RPCError(code: .internal, message: "too late"))
        let reply = try await pending.value
        #expect(reply == "answered later")
      }
      if overTLS {
        try await TestServer.with { server in
          let (client, connection) = try server.client()
          try await body(client, server.probe)
          await connection.close()
        }
      } else {
        try await withInProcessClient(body)
      }
    }

    @Test("a responder dropped without an answer ends the call with INTERNAL", arguments: [true, false])
    func droppedResponder(overTLS: Bool) async throws {
      let body: @Sendable (RPCClient) async throws -> Void = { client in
        await #expect {
          _ = try await call(client, TestService.onLoopDropping, "x")
        } throws: { ($0 as? RPCError)?.code == .internal }
      }
      if overTLS {
        try await TestServer.with { server in
          let (client, connection) = try server.client()
          try await body(client)
          await connection.close()
        }
      } else {
        try await withInProcessClient { client, _ in try await body(client) }
      }
    }

    @Test("a call whose deadline passes ends for the client; the late answer is dropped and the connection serves on")
    func deadlineThenLateAnswer() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        // The connection's SETTINGS exchanged first: a call's deadline runs while it waits to
        // be sent, and this one must reach the server for its late answer to be dropped.
        #expect(try await call(client, TestService.onLoop, "warm") == "WARM@loop")
        await #expect {
          _ = try await call(client, TestService.onLoopLater, "slow", timeout: .milliseconds(100))
        } throws: { ($0 as? RPCError)?.code == .deadlineExceeded }
        // On a loaded machine the deadline can pass before the server has read the call.
        await server.probe.started.wait()
        let responder = server.probe.responders.withLock { $0.removeFirst().1 }
        responder.succeed(Google_Protobuf_StringValue("too late"))
        #expect(try await call(client, TestService.onLoop, "again") == "AGAIN@loop")
        await connection.close()
      }
    }

    @Test("a graceful shutdown waits for a loop handler's pending answer")
    func drainWaitsForAnswer() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        let pending = Task { try await call(client, TestService.onLoopLater, "draining") }
        await server.probe.started.wait()
        await server.group.triggerGracefulShutdown()
        let responder = server.probe.responders.withLock { $0.removeFirst().1 }
        responder.succeed(Google_Protobuf_StringValue("finished"))
        #expect(try await pending.value == "finished")
        await connection.close()
      }
    }

    @Test("a callback call over TLS completes on the connection's event loop once it is open")
    func callbackOverTLS() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        // The first call connects, in a task.
        let (first, _) = await callbackCall(client, TestService.unary, "one")
        #expect(try first.get() == "ONE")
        let (second, onLoop) = await callbackCall(client, TestService.onLoop, "two", loop: connection.eventLoop)
        #expect(try second.get() == "TWO@loop")
        #expect(onLoop)
        let (failed, _) = await callbackCall(client, TestService.onLoopFailing, "three")
        #expect(throws: RPCError.self) { try failed.get() }
        if case .failure(let error) = failed { #expect(error.code == .failedPrecondition) }
        await connection.close()
      }
    }

    @Test("a callback call refused by a draining server is retried once on a fresh connection, then fails UNAVAILABLE")
    func callbackDuringDrain() async throws {
      try await TestServer.with { server in
        let (client, connection) = try server.client()
        let inFlight = await server.gatedCallDuringDrain(client)
        // Once the GOAWAY has arrived, a call fails before its stream opens; the connection
        // retries it on a fresh connection, which the draining server no longer accepts.
        var refused: RPCError?
        for _ in 0..<10_000 where refused == nil {
          if case .failure(let error) = await callbackCall(client, TestService.unary, "late").0 { refused = error }
        }
        #expect(refused?.code == .unavailable)
        server.probe.gate.signal()
        #expect(try await inFlight.value.value == "done:a")
        await connection.close()
      }
    }

    @Test("a callback call over a transport without an event loop runs in a task")
    func callbackInProcess() async throws {
      try await withInProcessClient { client, _ in
        let (result, _) = await callbackCall(client, TestService.unary, "hello")
        #expect(result == .success("HELLO"))
      }
    }
  }
}
