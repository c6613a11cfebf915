// Pick a photo (or the bundled sample), then prompt: in Points mode a tap adds a foreground
// point and a long-press a background point; in Box mode a drag draws the box. The selected mask
// is drawn over the photo, the multimask outputs (with their predicted IoU) can be chosen, and
// the mask can be exported as a PNG (8-bit grey, 255 = mask) through the share sheet.
// A model that fails the load-time checks (sha256, OS version, missing package) shows its error
// in place of the photo.
//
// Not compiled here (no Xcode on the Linux machine this project is developed on).

import CoreML
import ImageIO
import PhotosUI
import SwiftUI
import UIKit
import UniformTypeIdentifiers

/// Serialises every Core ML call off the main thread.
actor PredictorWorker {
    private var predictor: SamPredictor?

    func load() async throws -> String {
        let p = try await SamPredictor.load(computeUnits: .all)
        predictor = p
        let compiled = p.prepared.compactMap(\.compileSeconds).reduce(0, +)
        let hashed = p.prepared.map(\.hashSeconds).reduce(0, +)
        var line = String(format: "%@ + %@ (%@, coremltools %@) verified in %.2f s, loaded in %.2f s",
                          ModelConstants.encoderFile, ModelConstants.decoderFile, ModelConstants.precision,
                          ModelConstants.exporterVersion, hashed, p.encoderLoadSeconds + p.decoderLoadSeconds)
        if compiled > 0 { line += String(format: ", compiled once in %.1f s", compiled) }
        return line
    }

    func setImage(_ image: CGImage) throws -> Double {
        guard let predictor else { throw SamError.notLoaded }
        let t0 = DispatchTime.now()
        try predictor.setImage(image)
        return SamPredictor.seconds(since: t0)
    }

    func predict(_ points: [PointPrompt], box: CGRect?, multimask: Bool) throws -> ([MaskResult], Double) {
        guard let predictor else { throw SamError.notLoaded }
        let t0 = DispatchTime.now()
        let masks = try predictor.predict(points: points, box: box, multimask: multimask)
        return (masks, SamPredictor.seconds(since: t0))
    }
}

enum PromptMode: String, CaseIterable, Identifiable {
    case points = "Points"
    case box = "Box"
    var id: String { rawValue }
}

/// One undoable prompt edit.
enum PromptEdit {
    case point
    case box(previous: CGRect?)
}

@MainActor
final class DemoModel: ObservableObject {
    /// Photos are downscaled to this longest side first: the model sees 256 px anyway and the
    /// mask upscaling to the original size is the costly part on a 12 MP photo.
    static let maxPhotoSide: CGFloat = 1024
    static let sampleResource = "sample"

    @Published var photo: UIImage?
    @Published var points: [PointPrompt] = []
    /// Box prompt in photo pixels.
    @Published var box: CGRect?
    @Published var mode: PromptMode = .points
    @Published var masks: [MaskResult] = []
    @Published var selected = 0
    @Published var overlay: CGImage?
    /// The selected mask as a PNG file, for the share sheet.
    @Published var exportURL: URL?
    @Published var status = "Checking and loading the models..."
    /// Set when the load-time checks fail; shown instead of the photo.
    @Published var loadError: String?
    @Published var modelsReady = false
    @Published var busy = false

    private let worker = PredictorWorker()
    private var imageReady = false
    private var history: [PromptEdit] = []

    var hasPrompt: Bool { !points.isEmpty || box != nil }

    func loadModels() async {
        busy = true
        do {
            status = try await worker.load()
            modelsReady = true
            loadError = nil
        } catch {
            loadError = error.localizedDescription
            status = "The app cannot segment until this is fixed."
        }
        busy = false
        // a photo picked while the models were loading
        if modelsReady && photo != nil { await encodePhoto() }
    }

    func loadSample() async {
        guard let url = Bundle.main.url(forResource: Self.sampleResource, withExtension: "jpg"),
              let image = UIImage(contentsOfFile: url.path) else {
            status = "\(Self.sampleResource).jpg is not in the app bundle (SamEdgeDemo/Resources/sample.jpg)"
            return
        }
        await setPhoto(image)
    }

    func setPickedPhoto(_ data: Data?) async {
        guard let data, let image = UIImage(data: data) else {
            status = "could not read the picked photo"
            return
        }
        await setPhoto(image)
    }

    func setPhoto(_ image: UIImage) async {
        photo = Self.uprightScaled(image, maxSide: Self.maxPhotoSide)
        resetPrompts()
        await encodePhoto()
    }

    /// Runs the encoder on the current photo (once per photo; prompts only run the decoder).
    private func encodePhoto() async {
        imageReady = false
        guard modelsReady else { return }
        guard let cg = photo?.cgImage else { status = SamError.imageConversion.localizedDescription; return }
        busy = true
        defer { busy = false }
        do {
            let s = try await worker.setImage(cg)
            imageReady = true
            status = String(format: "encoder %.0f ms - %@", s * 1000, Self.hint(mode))
        } catch {
            status = error.localizedDescription
        }
    }

    static func hint(_ mode: PromptMode) -> String {
        mode == .points ? "tap: foreground point, long-press: background point" : "drag to draw a box"
    }

    func addPoint(_ p: PointPrompt) async {
        guard imageReady else { return }
        points.append(p)
        history.append(.point)
        await runDecoder()
    }

    /// `rect` in photo pixels, already clamped to the photo.
    func setBox(_ rect: CGRect) async {
        guard imageReady else { return }
        guard rect.width >= 1, rect.height >= 1 else {
            status = "box too small: drag further"
            return
        }
        history.append(.box(previous: box))
        box = rect
        await runDecoder()
    }

    func undo() async {
        guard let last = history.popLast() else { return }
        switch last {
        case .point: if !points.isEmpty { points.removeLast() }
        case .box(let previous): box = previous
        }
        if hasPrompt { await runDecoder() } else { clearMasks() }
    }

    func clearPrompts() {
        resetPrompts()
        status = Self.hint(mode)
    }

    private func resetPrompts() {
        points = []
        box = nil
        history = []
        clearMasks()
    }

    private func clearMasks() {
        masks = []
        overlay = nil
        exportURL = nil
    }

    func select(_ index: Int) {
        selected = index
        guard masks.indices.contains(index) else { overlay = nil; exportURL = nil; return }
        overlay = Self.overlayImage(masks[index])
        exportURL = Self.writeMaskPNG(masks[index])
    }

    private func runDecoder() async {
        busy = true
        defer { busy = false }
        // SAM's advice: the three multimask outputs for an ambiguous prompt (one click), the
        // single-mask output for a box or several points.
        let multimask = box == nil && points.count == 1
        do {
            let (m, s) = try await worker.predict(points, box: box, multimask: multimask)
            masks = m
            // start on the mask with the highest predicted IoU, as SAM demos do
            let best = m.indices.max(by: { m[$0].iou < m[$1].iou }) ?? 0
            select(best)
            status = String(format: "decoder + upscaling %.0f ms, %d point(s)%@", s * 1000, points.count,
                            box == nil ? "" : " + box")
        } catch {
            status = error.localizedDescription
        }
    }

    /// Applies the EXIF orientation (the encoder expects upright RGB) and limits the size.
    static func uprightScaled(_ image: UIImage, maxSide: CGFloat) -> UIImage {
        let size = image.size
        let scale = min(1, maxSide / max(size.width, size.height))
        let target = CGSize(width: (size.width * scale).rounded(), height: (size.height * scale).rounded())
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        format.opaque = true
        return UIGraphicsImageRenderer(size: target, format: format).image { _ in
            image.draw(in: CGRect(origin: .zero, size: target))
        }
    }

    /// Mask (logits > threshold) -> translucent RGBA overlay at the photo's size.
    static func overlayImage(_ mask: MaskResult, rgb: (UInt8, UInt8, UInt8) = (30, 144, 255)) -> CGImage? {
        let binary = MaskMath.binaryMask(mask.logits, threshold: ModelConstants.maskThreshold)
        var pixels = [UInt8](repeating: 0, count: mask.width * mask.height * 4)
        let alpha: UInt8 = 140
        for i in 0..<(mask.width * mask.height) where binary[i] != 0 {
            // premultiplied alpha
            pixels[i * 4] = UInt8(Int(rgb.0) * Int(alpha) / 255)
            pixels[i * 4 + 1] = UInt8(Int(rgb.1) * Int(alpha) / 255)
            pixels[i * 4 + 2] = UInt8(Int(rgb.2) * Int(alpha) / 255)
            pixels[i * 4 + 3] = alpha
        }
        guard let provider = CGDataProvider(data: Data(pixels) as CFData),
              let space = CGColorSpace(name: CGColorSpace.sRGB) else { return nil }
        return CGImage(width: mask.width, height: mask.height, bitsPerComponent: 8, bitsPerPixel: 32,
                       bytesPerRow: mask.width * 4, space: space,
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.premultipliedLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }

    /// The mask as a PNG: 8-bit grey, width x height of the photo the app works on, 255 = mask.
    static func maskPNG(_ mask: MaskResult) -> Data? {
        let bytes = MaskMath.binaryMask(mask.logits, threshold: ModelConstants.maskThreshold)
        guard let provider = CGDataProvider(data: Data(bytes) as CFData),
              let image = CGImage(width: mask.width, height: mask.height, bitsPerComponent: 8, bitsPerPixel: 8,
                                  bytesPerRow: mask.width, space: CGColorSpaceCreateDeviceGray(),
                                  bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.none.rawValue),
                                  provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
        else { return nil }
        let data = NSMutableData()
        guard let dest = CGImageDestinationCreateWithData(data as CFMutableData, UTType.png.identifier as CFString, 1, nil)
        else { return nil }
        CGImageDestinationAddImage(dest, image, nil)
        return CGImageDestinationFinalize(dest) ? data as Data : nil
    }

    /// Writes the mask PNG (atomically) into the temporary folder; nil if encoding fails.
    static func writeMaskPNG(_ mask: MaskResult) -> URL? {
        guard let png = maskPNG(mask) else { return nil }
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("sam-edge-mask-\(mask.width)x\(mask.height).png")
        do { try png.write(to: url, options: .atomic) } catch { return nil }
        return url
    }
}

struct ContentView: View {
    @StateObject private var model = DemoModel()
    @ObservedObject private var bench = BenchmarkRunner.shared
    @State private var pickerItem: PhotosPickerItem?
    /// The box being dragged, in view coordinates of the photo.
    @State private var dragRect: CGRect?

    var body: some View {
        NavigationStack {
            VStack(spacing: 12) {
                if model.loadError == nil {
                    Picker("Prompt", selection: $model.mode) {
                        ForEach(PromptMode.allCases) { Text($0.rawValue).tag($0) }
                    }
                    .pickerStyle(.segmented)
                }
                mainArea
                if model.masks.count > 1 { maskPicker }
                Text(model.status).font(.footnote).foregroundStyle(.secondary).multilineTextAlignment(.center)
                if let line = bench.status { Text(line).font(.footnote.monospaced()) }
            }
            .padding()
            .navigationTitle("SAM edge")
            .navigationBarTitleDisplayMode(.inline)
            .toolbar {
                ToolbarItemGroup(placement: .topBarLeading) {
                    PhotosPicker(selection: $pickerItem, matching: .images) { Label("Photo", systemImage: "photo") }
                    Button { Task { await model.loadSample() } } label: { Label("Sample", systemImage: "person.crop.square") }
                }
                ToolbarItemGroup(placement: .topBarTrailing) {
                    Button { Task { await bench.run(BenchmarkConfig()) } } label: { Label("Benchmark", systemImage: "speedometer") }
                        .disabled(bench.running || model.busy)
                }
                ToolbarItemGroup(placement: .bottomBar) {
                    Button { Task { await model.undo() } } label: { Label("Undo", systemImage: "arrow.uturn.backward") }
                        .disabled(!model.hasPrompt || model.busy)
                    Button { model.clearPrompts() } label: { Label("Clear", systemImage: "xmark.circle") }
                        .disabled(!model.hasPrompt || model.busy)
                    Spacer()
                    if let url = model.exportURL {
                        ShareLink(item: url) { Label("Export mask", systemImage: "square.and.arrow.up") }
                    } else {
                        Button {} label: { Label("Export mask", systemImage: "square.and.arrow.up") }.disabled(true)
                    }
                }
            }
        }
        .task { await model.loadModels() }
        .onChange(of: pickerItem) { _, item in
            guard let item else { return }
            Task { await model.setPickedPhoto(try? await item.loadTransferable(type: Data.self)) }
        }
        .onChange(of: model.mode) { _, mode in
            if model.photo != nil { model.status = DemoModel.hint(mode) }
        }
    }

    @ViewBuilder private var mainArea: some View {
        if let error = model.loadError {
            ContentUnavailableView {
                Label("The models could not be loaded", systemImage: "exclamationmark.triangle.fill")
                    .foregroundStyle(.red)
            } description: {
                Text(error).textSelection(.enabled)
            }
        } else {
            photoArea
        }
    }

    private var photoArea: some View {
        GeometryReader { geo in
            if let photo = model.photo {
                let fit = Self.aspectFitRect(image: photo.size, in: geo.size)
                let sx = fit.width / max(photo.size.width, 1)
                let sy = fit.height / max(photo.size.height, 1)
                ZStack(alignment: .topLeading) {
                    Image(uiImage: photo).resizable().frame(width: fit.width, height: fit.height)
                    if let overlay = model.overlay {
                        Image(decorative: overlay, scale: 1).resizable().frame(width: fit.width, height: fit.height)
                    }
                    if let box = model.box {
                        boxShape(CGRect(x: box.minX * sx, y: box.minY * sy, width: box.width * sx, height: box.height * sy))
                    }
                    if let dragRect { boxShape(dragRect).opacity(0.7) }
                    ForEach(Array(model.points.enumerated()), id: \.offset) { _, p in
                        Circle()
                            .fill(p.foreground ? Color.green : Color.red)
                            .overlay(Circle().stroke(.white, lineWidth: 2))
                            .frame(width: 14, height: 14)
                            .position(x: CGFloat(p.x) * sx, y: CGFloat(p.y) * sy)
                    }
                    if model.busy { ProgressView().frame(width: fit.width, height: fit.height) }
                }
                .frame(width: fit.width, height: fit.height)
                .contentShape(Rectangle())
                .gesture(pointGesture(photoSize: photo.size, viewSize: fit.size),
                         including: model.mode == .points ? .all : .subviews)
                .gesture(boxGesture(photoSize: photo.size, viewSize: fit.size),
                         including: model.mode == .box ? .all : .subviews)
                .position(x: fit.midX, y: fit.midY)
            } else {
                VStack(spacing: 16) {
                    ContentUnavailableView("Pick a photo", systemImage: "photo.on.rectangle",
                                           description: Text("Points: tap adds a foreground point, long-press a background point. Box: drag."))
                    Button("Try the sample photo") { Task { await model.loadSample() } }
                        .buttonStyle(.borderedProminent)
                        .disabled(!model.modelsReady)
                }
                .frame(width: geo.size.width, height: geo.size.height)
            }
        }
    }

    private func boxShape(_ rect: CGRect) -> some View {
        Rectangle()
            .stroke(Color.yellow, style: StrokeStyle(lineWidth: 2, dash: [6, 3]))
            .frame(width: rect.width, height: rect.height)
            .position(x: rect.midX, y: rect.midY)
    }

    private var maskPicker: some View {
        Picker("Mask", selection: Binding(get: { model.selected }, set: { model.select($0) })) {
            ForEach(model.masks.indices, id: \.self) { i in
                Text(String(format: "Mask %d  IoU %.2f", i + 1, model.masks[i].iou)).tag(i)
            }
        }
        .pickerStyle(.segmented)
    }

    /// View point -> photo pixels, clamped to the photo.
    private static func toImage(_ p: CGPoint, photoSize: CGSize, viewSize: CGSize) -> CGPoint {
        CGPoint(x: min(max(p.x / viewSize.width * photoSize.width, 0), photoSize.width),
                y: min(max(p.y / viewSize.height * photoSize.height, 0), photoSize.height))
    }

    /// Long-press (then lift) = background point; a plain tap = foreground point.
    private func pointGesture(photoSize: CGSize, viewSize: CGSize) -> some Gesture {
        func prompt(_ p: CGPoint, foreground: Bool) -> PointPrompt {
            let q = Self.toImage(p, photoSize: photoSize, viewSize: viewSize)
            return PointPrompt(x: Double(q.x), y: Double(q.y), foreground: foreground)
        }
        let longPress = LongPressGesture(minimumDuration: 0.45)
            .sequenced(before: DragGesture(minimumDistance: 0, coordinateSpace: .local))
            .onEnded { value in
                if case .second(true, let drag?) = value {
                    Task { await model.addPoint(prompt(drag.location, foreground: false)) }
                }
            }
        let tap = SpatialTapGesture(coordinateSpace: .local).onEnded { value in
            Task { await model.addPoint(prompt(value.location, foreground: true)) }
        }
        return longPress.exclusively(before: tap)
    }

    /// Drag = box from the start to the end point (any direction).
    private func boxGesture(photoSize: CGSize, viewSize: CGSize) -> some Gesture {
        DragGesture(minimumDistance: 4, coordinateSpace: .local)
            .onChanged { value in
                let a = value.startLocation, b = value.location
                dragRect = CGRect(x: min(a.x, b.x), y: min(a.y, b.y), width: abs(b.x - a.x), height: abs(b.y - a.y))
            }
            .onEnded { value in
                dragRect = nil
                let a = Self.toImage(value.startLocation, photoSize: photoSize, viewSize: viewSize)
                let b = Self.toImage(value.location, photoSize: photoSize, viewSize: viewSize)
                let rect = CGRect(x: min(a.x, b.x), y: min(a.y, b.y), width: abs(b.x - a.x), height: abs(b.y - a.y))
                Task { await model.setBox(rect) }
            }
    }

    static func aspectFitRect(image: CGSize, in bounds: CGSize) -> CGRect {
        guard image.width > 0, image.height > 0 else { return .zero }
        let scale = min(bounds.width / image.width, bounds.height / image.height)
        let size = CGSize(width: image.width * scale, height: image.height * scale)
        return CGRect(x: (bounds.width - size.width) / 2, y: (bounds.height - size.height) / 2,
                      width: size.width, height: size.height)
    }
}
