import CHourglassClient
import Foundation
import HourglassInterop
import Testing

/// The C client's framing against a hand-driven server (ScriptedServer): frames the Swift
/// server does not send but docs/protocol.md allows or requires clients to handle.
@Suite("C client framing", .serialized, .timeLimit(.minutes(3)))
struct CClientFramingTests {
  typealias S = ScriptedServer

  /// GetResponse { task: TaskInfo { task_id: "t-1", task_status: SUCCEEDED, name: "n" } }.
  static let getResponse = S.field(1, S.field(1, Array("t-1".utf8)) + S.varintField(2, 4) + S.field(5, Array("n".utf8)))

  /// Runs one hg_get against a server that answers with `script`; returns the status and task.
  static func getAgainst(
    _ script: @escaping @Sendable (UInt32) -> [UInt8],
    recorder: S.Recorder = S.Recorder(),
    callTimeoutMs: UInt32 = 30_000
  ) async throws -> (hg_status, TaskCopy?, Int32) {
    let fixture = try Fixture()
    defer { fixture.remove() }
    return try await S.with(credentials: fixture.pki.serverCredentials, behaviour: .reply(script), recorder: recorder) { port in
      await onThread { () -> (hg_status, TaskCopy?, Int32) in
        let (client, status) = connect(port: port, files: fixture.files, callTimeoutMs: callTimeoutMs)
        guard let client else { return (status, nil, -1) }
        defer { hg_close(client) }
        let (s, task) = get(client, "t-1")
        return (s, task, hg_is_usable(client))
      }
    }
  }

  @Test("PING answered with PONG; unknown frames, response HEADERS, CREDIT and fragments handled")
  func everythingAClientMustHandle() async throws {
    let recorder = S.Recorder()
    let body = Self.getResponse
    let (status, task, usable) = try await Self.getAgainst(
      { id in
        S.frame(6, 0, 0, Array("12345678".utf8))  // PING
          + S.frame(42, 0x80, 0, [1, 2, 3])  // an unknown frame type
          + S.frame(1, 0, id)  // response HEADERS, no metadata
          + S.frame(2, 0x02, id, Array(body[0..<5]))  // MESSAGE fragment (MORE)
          + S.frame(5, 0, id, [0, 0, 0, 1])  // CREDIT
          + S.frame(2, 0x02, id, [])  // an empty fragment (MORE)
          + S.frame(2, 0, id, Array(body[5...]))  // the last fragment
          + S.frame(3, 0, id)  // TRAILERS OK (empty payload)
      }, recorder: recorder)
    #expect(status.code == 0, "\(message(status))")
    #expect(task?.id == "t-1")
    #expect(task?.name == "n")
    #expect(task?.status == Int32(HG_TASK_SUCCEEDED.rawValue))
    #expect(usable == 1)
    // The client sent its frames before the call returned; the server's event loop may still
    // be reading them.
    #expect(await recorder.wait { frames in frames.contains { $0.0 == 7 } }, "the PONG arrived")
    let frames = recorder.all
    #expect(frames.first?.0 == 0, "SETTINGS first")
    #expect(frames.contains { $0.0 == 7 && $0.2 == 0 && $0.3 == Array("12345678".utf8) }, "PONG with the PING's bytes")
    let headers = try #require(frames.first { $0.0 == 1 })
    #expect(headers.2 == 1, "the first stream is 1")
    #expect(String(decoding: headers.3, as: UTF8.self).contains("/hourglass.v1.TaskService/Get"))
    #expect(frames.contains { $0.0 == 2 && $0.1 == 1 && $0.2 == 1 }, "the request carries END_STREAM")
  }

  @Test("RESET from the server ends the call with its code and message")
  func resetFromServer() async throws {
    let (status, task, usable) = try await Self.getAgainst { id in
      S.frame(4, 0, id, S.varintField(1, 8) + S.field(2, Array("too many".utf8)))
    }
    #expect(status.code == Int32(HG_RESOURCE_EXHAUSTED))
    #expect(status.local == Int32(HG_LOCAL_NONE))
    #expect(message(status) == "too many")
    #expect(task == nil)
    #expect(usable == 1)
  }

  @Test("a status code the client does not know becomes UNKNOWN")
  func unknownCode() async throws {
    let (status, _, _) = try await Self.getAgainst { id in S.frame(3, 0, id, S.varintField(1, 99)) }
    #expect(status.code == Int32(HG_UNKNOWN))
  }

  @Test("OK without a response message is INTERNAL")
  func okWithoutMessage() async throws {
    let (status, _, _) = try await Self.getAgainst { id in S.frame(3, 0, id) }
    #expect(status.code == Int32(HG_INTERNAL))
    #expect(status.local == Int32(HG_LOCAL_PROTOCOL))
  }

  @Test("GOAWAY below the call's stream: UNAVAILABLE, not processed, no new calls")
  func goAwayUnprocessed() async throws {
    let (status, _, usable) = try await Self.getAgainst { _ in
      S.frame(8, 0, 0, S.varintField(2, 14) + S.field(3, Array("shutting down".utf8)))
    }
    #expect(status.code == Int32(HG_UNAVAILABLE))
    #expect(status.local == Int32(HG_LOCAL_GOAWAY))
    #expect(usable == 0)
  }

  @Test("a second SETTINGS is a connection error: GOAWAY INTERNAL sent")
  func secondSettings() async throws {
    let recorder = S.Recorder()
    let (status, _, usable) = try await Self.getAgainst({ _ in S.frame(0, 0, 0) }, recorder: recorder)
    #expect(status.code == Int32(HG_INTERNAL))
    #expect(status.local == Int32(HG_LOCAL_PROTOCOL))
    #expect(usable == 0)
    // The GOAWAY is sent before the call returns; the server's event loop may still be reading it.
    #expect(await recorder.wait { frames in frames.contains { $0.0 == 8 } }, "the GOAWAY arrived")
    #expect(recorder.all.contains { $0.0 == 8 && $0.3.starts(with: [0x10, 13]) }, "GOAWAY code 13")
  }

  @Test("a frame larger than the client's max_frame_size is refused before its payload is read")
  func frameTooLarge() async throws {
    let (status, _, usable) = try await Self.getAgainst { id in
      // Only the header: length 65 537 announced, no payload follows.
      Array(S.frame(2, 0, id)[0..<10].enumerated().map { $0.offset == 1 ? 1 : ($0.offset == 3 ? 1 : $0.element) })
    }
    #expect(status.code == Int32(HG_RESOURCE_EXHAUSTED), "\(message(status))")
    #expect(usable == 0)
  }

  @Test("a frame for a stream never opened is a connection error")
  func neverOpenedStream() async throws {
    let (status, _, usable) = try await Self.getAgainst { id in S.frame(3, 0, id + 2) }
    #expect(status.code == Int32(HG_INTERNAL))
    #expect(usable == 0)
  }
}
