import CHourglassClient
import Foundation
import HourglassCoordinator
import HourglassInterop
import HourglassRPC
import HourglassStoreSQLite
import HourglassTransport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// The server the C client is tested against: the real coordinator's TaskService on a fresh
/// SQLite store (its dispatcher is not started; these tests only schedule, read and delete).
/// The deadline test alone uses `FakeTaskService`, whose `Get` of a special id never answers.
let makeTaskService: @Sendable () async throws -> RPCRouter = {
  var logger = Logger(label: "test.c-interop")
  logger.logLevel = .warning
  let path = NSTemporaryDirectory() + "hg-c-interop-\(UUID().uuidString).db"
  let store = try await SQLiteTaskStore(configuration: .defaults(path: path), logger: logger)
  return try Coordinator(configuration: .defaults, store: store, tls: nil, logger: logger).server.router
}

/// Certificates written to a fresh temporary folder, made once per test.
struct Fixture: Sendable {
  let pki: InteropPKI
  let files: InteropPKI.Files
  let directory: String

  init() throws {
    pki = try InteropPKI()
    directory = NSTemporaryDirectory() + "hg-c-client-" + UUID().uuidString
    files = try pki.write(to: directory)
  }

  func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Runs blocking C code on its own thread, so that it never blocks Swift's cooperative pool
/// (which the in-process server's handlers need).
func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
  await withCheckedContinuation { continuation in
    let thread = Thread {
      continuation.resume(returning: body())
    }
    thread.start()
  }
}

/// The message of an `hg_status`.
func message(_ status: hg_status) -> String {
  withUnsafeBytes(of: status.message) { raw in
    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
  }
}

/// A C connection, opened from Swift values; the C strings live as long as the call.
func connect(
  host: String = "127.0.0.1",
  port: Int,
  files: InteropPKI.Files,
  userID: String? = nil,
  // Generous: on a loaded CI machine a TLS handshake and a store write can take seconds.
  callTimeoutMs: UInt32 = 30_000,
  connectTimeoutMs: UInt32 = 30_000
) -> (OpaquePointer?, hg_status) {
  var status = hg_status()
  let client = host.withCString { host in
    files.ca.withCString { ca in
      files.certificate.withCString { cert in
        files.key.withCString { key in
          withOptionalCString(userID) { user in
            var options = hg_connect_options()
            options.host = host
            options.port = UInt16(port)
            options.ca_file = ca
            options.cert_file = cert
            options.key_file = key
            options.user_id = user
            options.connect_timeout_ms = connectTimeoutMs
            options.call_timeout_ms = callTimeoutMs
            return hg_connect(&options, &status)
          }
        }
      }
    }
  }
  return (client, status)
}

func withOptionalCString<T>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> T) -> T {
  guard let text else { return body(nil) }
  return text.withCString { body($0) }
}

/// What a schedule call needs, in Swift terms.
struct ScheduleInput: Sendable {
  enum Kind: Sendable {
    case cron(String)
    case at(String)
    case every(UInt64)
  }
  var kind: Kind
  var blob: [UInt8] = Array("#!/bin/sh\necho hello\n".utf8)
  var timeZone: String? = "UTC"
  var name: String? = "from-c"
  var arguments: [String] = []
  var recurring = true
}

/// Calls hg_schedule; returns the status and the task id (or nil).
func schedule(_ client: OpaquePointer, _ input: ScheduleInput) -> (hg_status, String?) {
  var status = hg_status()
  var taskID: UnsafeMutablePointer<CChar>? = nil
  var owned: [UnsafeMutablePointer<CChar>?] = []
  func keep(_ text: String?) -> UnsafePointer<CChar>? {
    guard let text else { return nil }
    let copy = strdup(text)
    owned.append(copy)
    return UnsafePointer(copy)
  }
  defer { owned.forEach { free($0) } }

  var request = hg_schedule_request()
  switch input.kind {
  case .cron(let expression):
    request.kind = HG_SCHEDULE_CRON
    request.cron = keep(expression)
  case .at(let text):
    request.kind = HG_SCHEDULE_AT
    request.at = keep(text)
  case .every(let seconds):
    request.kind = HG_SCHEDULE_EVERY
    request.every_seconds = seconds
  }
  request.time_zone = keep(input.timeZone)
  request.name = keep(input.name)
  request.is_recurring = input.recurring ? 1 : 0
  let arguments: [UnsafePointer<CChar>?] = input.arguments.map { keep($0) }
  let code = input.blob.withUnsafeBufferPointer { blob in
    arguments.withUnsafeBufferPointer { argv in
      request.blob = blob.baseAddress
      request.blob_len = blob.count
      request.arguments = argv.baseAddress
      request.n_arguments = argv.count
      return hg_schedule(client, &request, &taskID, nil, &status)
    }
  }
  _ = code
  defer { hg_string_free(taskID) }
  return (status, taskID.map { String(cString: $0) })
}

/// A task copied out of an `hg_task`.
struct TaskCopy: Sendable, Equatable {
  var id: String
  var status: Int32
  var schedule: String
  var name: String
  var blobSHA256: String
  var arguments: [String]
  var recurring: Bool
  var hasNextExecution: Bool

  init(_ t: hg_task) {
    id = String(cString: t.task_id)
    status = t.status
    schedule = String(cString: t.schedule)
    name = String(cString: t.name)
    blobSHA256 = String(cString: t.blob_sha256)
    arguments = (0..<t.n_arguments).map { String(cString: t.arguments[$0]!) }
    recurring = t.is_recurring != 0
    hasNextExecution = t.has_next_execution != 0
  }
}

func get(_ client: OpaquePointer, _ id: String) -> (hg_status, TaskCopy?) {
  var status = hg_status()
  var task: UnsafeMutablePointer<hg_task>? = nil
  _ = hg_get(client, id, &task, &status)
  defer { hg_task_free(task) }
  return (status, task.map { TaskCopy($0.pointee) })
}

func list(_ client: OpaquePointer, token: String?, pageSize: UInt32) -> (hg_status, [TaskCopy], String) {
  var status = hg_status()
  var page: UnsafeMutablePointer<hg_task_list>? = nil
  _ = withOptionalCString(token) { hg_list(client, $0, pageSize, &page, &status) }
  defer { hg_task_list_free(page) }
  guard let page else { return (status, [], "") }
  let tasks = (0..<page.pointee.count).map { TaskCopy(page.pointee.tasks[$0]) }
  return (status, tasks, String(cString: page.pointee.next_page_token))
}

func delete(_ client: OpaquePointer, _ id: String) -> hg_status {
  var status = hg_status()
  _ = hg_delete(client, id, 1, nil, &status)
  return status
}

/// A hand-driven hourglass/1 server for the framing cases a well-behaved server never
/// produces: it sends an empty SETTINGS after the handshake, records every frame the client
/// sends, and either closes the connection at the client's first HEADERS (a server that goes
/// away mid-call) or answers each request (the MESSAGE with END_STREAM) with scripted bytes.
enum ScriptedServer {
  enum Behaviour: Sendable {
    case closeOnHeaders
    case reply(@Sendable (_ streamID: UInt32) -> [UInt8])
  }

  /// The frames the client sent, after its preface: (type, flags, stream id, payload).
  final class Recorder: Sendable {
    typealias Frame = (UInt8, UInt8, UInt32, [UInt8])
    typealias Condition = @Sendable ([Frame]) -> Bool

    private struct State {
      var frames: [Frame] = []
      var nextWaiter = 0
      var waiters: [Int: (condition: Condition, continuation: CheckedContinuation<Bool, Never>)] = [:]
    }
    private let state = Mutex(State())

    func append(_ frame: Frame) {
      let satisfied = state.withLock { state in
        state.frames.append(frame)
        let frames = state.frames
        let ready = state.waiters.filter { $0.value.condition(frames) }
        for key in ready.keys { state.waiters[key] = nil }
        return ready.values.map(\.continuation)
      }
      for continuation in satisfied { continuation.resume(returning: true) }
    }

    var all: [Frame] { state.withLock { $0.frames } }

    /// Waits until the recorded frames satisfy `condition` (true), or `seconds` pass first
    /// (false): the server's event loop may still be reading frames the client has sent.
    func wait(seconds: Int = 10, until condition: @escaping Condition) async -> Bool {
      let key = state.withLock { state -> Int in
        defer { state.nextWaiter += 1 }
        return state.nextWaiter
      }
      // A guard, not a wait for an event: it ends the wait only when the frames never come.
      let guardTask = Task {
        try? await Task.sleep(for: .seconds(seconds))
        self.giveUp(key)
      }
      defer { guardTask.cancel() }
      return await withCheckedContinuation { continuation in
        let now = state.withLock { state -> Bool in
          if condition(state.frames) { return true }
          state.waiters[key] = (condition, continuation)
          return false
        }
        if now { continuation.resume(returning: true) }
      }
    }

    private func giveUp(_ key: Int) {
      state.withLock { $0.waiters.removeValue(forKey: key) }?.continuation.resume(returning: false)
    }
  }

  static func with<T: Sendable>(
    credentials: TLSCredentials,
    behaviour: Behaviour,
    recorder: Recorder = Recorder(),
    _ body: (Int) async throws -> T
  ) async throws -> T {
    let context = try NIOSSLContext(configuration: credentials.serverConfiguration())
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
          try channel.pipeline.syncOperations.addHandler(Handler(behaviour: behaviour, recorder: recorder))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    do {
      let result = try await body(channel.localAddress!.port!)
      try await channel.close()
      return result
    } catch {
      try? await channel.close()
      throw error
    }
  }

  /// One frame's bytes.
  static func frame(_ type: UInt8, _ flags: UInt8 = 0, _ streamID: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
    let n = UInt32(payload.count)
    return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF), type, flags]
      + [UInt8(streamID >> 24), UInt8((streamID >> 16) & 0xFF), UInt8((streamID >> 8) & 0xFF), UInt8(streamID & 0xFF)] + payload
  }

  /// A protobuf length-delimited field (lengths under 128 only, enough for these tests).
  static func field(_ number: UInt8, _ bytes: [UInt8]) -> [UInt8] {
    precondition(bytes.count < 128)
    return [number << 3 | 2, UInt8(bytes.count)] + bytes
  }

  /// A protobuf varint field (values under 128 only).
  static func varintField(_ number: UInt8, _ value: UInt8) -> [UInt8] {
    precondition(value < 128)
    return [number << 3, value]
  }

  private final class Handler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let behaviour: Behaviour
    private let recorder: Recorder
    private var received: [UInt8] = []
    private var offset = 8  // past the preface

    init(behaviour: Behaviour, recorder: Recorder) {
      self.behaviour = behaviour
      self.recorder = recorder
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
      if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: ScriptedServer.frame(0, 0, 0))), promise: nil)
      }
      context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      var bytes = unwrapInboundIn(data)
      received += bytes.readBytes(length: bytes.readableBytes) ?? []
      while received.count >= offset + 10 {
        let h = Array(received[offset..<offset + 10])
        let length = Int(h[0]) << 24 | Int(h[1]) << 16 | Int(h[2]) << 8 | Int(h[3])
        guard received.count >= offset + 10 + length else { return }
        let streamID = UInt32(h[6]) << 24 | UInt32(h[7]) << 16 | UInt32(h[8]) << 8 | UInt32(h[9])
        let payload = Array(received[offset + 10..<offset + 10 + length])
        offset += 10 + length
        recorder.append((h[4], h[5], streamID, payload))
        switch behaviour {
        case .closeOnHeaders:
          if h[4] == 1 {
            context.close(promise: nil)
            return
          }
        case .reply(let script):
          if h[4] == 2 && h[5] & 1 != 0 {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: script(streamID))), promise: nil)
          }
        }
      }
    }
  }
}
