import HourglassRPC
import HourglassTransport
import Logging
import SwiftProtobuf
import Testing

/// The same call cases over the in-process transport and over real TLS on loopback.
extension TLSLoopbackTests {
  @Suite("Call types over both transports")
  struct CallTypeTests {
    enum Transport: String, CaseIterable, CustomTestStringConvertible {
      case inProcess, tls
      var testDescription: String { rawValue }
    }

    @discardableResult
    private func withClient<T: Sendable>(_ transport: Transport, _ body: (RPCClient, Probe) async throws -> T) async throws -> T {
      switch transport {
      case .inProcess:
        let probe = Probe()
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = RPCServer(router: TestService.router(probe: probe), logger: logger)
        return try await body(RPCClient(transport: InProcessTransport(server: server, peer: PeerIdentity(name: "alice", role: "user"))), probe)
      case .tls:
        return try await TestServer.with { server in
          let (client, connection) = try server.client()
          let result = try await body(client, server.probe)
          await connection.close()
          return result
        }
      }
    }

    @Test("unary", arguments: Transport.allCases)
    func unary(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        let reply = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("hello"), responseType: Google_Protobuf_StringValue.self)
        #expect(reply.value == "HELLO")
      }
    }

    @Test("a unary handler's error reaches the client as its status", arguments: Transport.allCases)
    func unaryError(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        await #expect {
          _ = try await client.unary(TestService.unaryFailing, request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self)
        } throws: { error in
          let error = error as? RPCError
          return error?.code == .failedPrecondition && error?.message == "not now"
        }
      }
    }

    // A unary method's request sent after its headers (as a client-streaming call sends it)
    // does not come with the stream: the server answers it through the method's stream form.
    @Test("a unary method answers a request sent after its headers", arguments: Transport.allCases)
    func unaryRequestAfterHeaders(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        let reply = try await client.sendStrings(TestService.unary, ["late"])
        #expect(reply == "LATE")
      }
    }

    @Test("a unary method refuses two requests with INVALID_ARGUMENT", arguments: Transport.allCases)
    func unaryTwoRequests(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        await #expect {
          _ = try await client.sendStrings(TestService.unary, ["one", "two"])
        } throws: { ($0 as? RPCError)?.code == .invalidArgument }
      }
    }

    // The server answers after the first request and reads no more, so the client's writes
    // soon wait for credit and fail once the call has ended: the answer is still the outcome.
    @Test("a client-streaming call the server answers early ends with the server's answer", arguments: Transport.allCases)
    func answeredEarly(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        let reply = try await client.sendStrings(TestService.firstOnly, (0..<1_000).map { "m\($0)" })
        #expect(reply == "m0")
      }
    }

    @Test("server streaming", arguments: Transport.allCases)
    func serverStreaming(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        // More messages than the initial credit (64): flow control must let them all through.
        let received = try await client.serverStreaming(
          TestService.serverStream, request: Google_Protobuf_Int64Value(300), responseType: Google_Protobuf_Int64Value.self
        ) { responses in
          var values: [Int64] = []
          for try await value in responses { values.append(value.value) }
          return values
        }
        #expect(received == Array(0..<300))
      }
    }

    @Test("client streaming", arguments: Transport.allCases)
    func clientStreaming(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        let sum = try await client.clientStreaming(
          TestService.clientStream, requestType: Google_Protobuf_Int64Value.self, responseType: Google_Protobuf_Int64Value.self
        ) { writer in
          for i in 1...200 { try await writer.write(Google_Protobuf_Int64Value(Int64(i))) }
        }
        #expect(sum.value == 20_100)
      }
    }

    @Test("bidirectional streaming", arguments: Transport.allCases)
    func bidirectional(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        let replies = try await client.bidirectional(
          TestService.bidi,
          requestType: Google_Protobuf_StringValue.self,
          responseType: Google_Protobuf_StringValue.self,
          requests: { writer in
            for word in ["a", "b", "c"] { try await writer.write(Google_Protobuf_StringValue(word)) }
          },
          responses: { responses in
            var all: [String] = []
            for try await reply in responses { all.append(reply.value) }
            return all
          }
        )
        #expect(replies == ["echo:a", "echo:b", "echo:c"])
      }
    }

    @Test("an unknown method is UNIMPLEMENTED", arguments: Transport.allCases)
    func unimplemented(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        await #expect {
          _ = try await client.unary(
            MethodDescriptor(service: "test.Echo", method: "Nope"), request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self)
        } throws: { ($0 as? RPCError)?.code == .unimplemented }
      }
    }

    @Test("a deadline that passes ends the call with DEADLINE_EXCEEDED", arguments: Transport.allCases)
    func deadline(_ transport: Transport) async throws {
      try await withClient(transport) { client, probe in
        // The connection's SETTINGS exchanged first: a call's deadline runs while it waits to be
        // sent, and this one must reach the server for its handler to be stopped.
        _ = try await client.unary(TestService.unary, request: Google_Protobuf_StringValue("warm"), responseType: Google_Protobuf_StringValue.self)
        await #expect {
          _ = try await client.unary(
            TestService.wait, request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self,
            options: CallOptions(timeout: .milliseconds(100)))
        } throws: { ($0 as? RPCError)?.code == .deadlineExceeded }
        // The server's handler is stopped too.
        await probe.cancelled.wait()
      }
    }

    @Test("a deadline centuries away (Int64.max seconds) is a deadline that never comes, not a crash", arguments: Transport.allCases)
    func farDeadline(_ transport: Transport) async throws {
      try await withClient(transport) { client, _ in
        let reply = try await client.unary(
          TestService.unary, request: Google_Protobuf_StringValue("far"), responseType: Google_Protobuf_StringValue.self,
          options: CallOptions(timeout: .seconds(Int64.max)))
        #expect(reply.value == "FAR")
      }
    }

    @Test("cancelling the client's task cancels the server's handler", arguments: Transport.allCases)
    func cancellation(_ transport: Transport) async throws {
      try await withClient(transport) { client, probe in
        let call = Task {
          try await client.unary(TestService.wait, request: Google_Protobuf_StringValue("x"), responseType: Google_Protobuf_StringValue.self)
        }
        await probe.started.wait()
        call.cancel()
        await probe.cancelled.wait()
        let result = await call.result
        #expect(throws: RPCError.self) { try result.get() }
        if case .failure(let error as RPCError) = result { #expect(error.code == .cancelled) }
      }
    }
  }
}
