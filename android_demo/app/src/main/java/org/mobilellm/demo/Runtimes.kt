package org.mobilellm.demo

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.LongBuffer
import org.mobilellm.core.Benchmark
import org.mobilellm.core.Manifest
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/** Opens an artifact in the runtime its manifest calls for. */
object Runtimes {
    fun session(file: File, m: Manifest, threads: Int, loadMode: String): Benchmark.Session =
        when (m.runtime()) {
            "executorch" -> ExecuTorchSession(file.path, threads, executorchLoadMode(loadMode))
            "onnxruntime" -> OrtLlmSession(file, m, threads)
            else -> throw IllegalArgumentException(m.whyNotRunnable())
        }

    fun executorchLoadMode(name: String): Int = when (name) {
        "file" -> Module.LOAD_MODE_FILE
        "mmap" -> Module.LOAD_MODE_MMAP
        "mlock" -> Module.LOAD_MODE_MMAP_USE_MLOCK_IGNORE_ERRORS
        else -> throw IllegalArgumentException("load_mode must be file, mmap or mlock, got $name")
    }
}

/**
 * A `.pte` with `forward(tokens int64 [1,T], input_pos int64 [1]) -> logits float32 [1,T,vocab]`
 * and its KV cache inside the program. load: `Module.load` (reads the program); init:
 * `loadMethod("forward")` (XNNPACK delegate init and weight packing).
 */
class ExecuTorchSession(private val path: String, private val threads: Int, private val loadMode: Int) :
    Benchmark.Session {
    private var module: Module? = null
    private var output: Tensor? = null

    override fun load() {
        module = Module.load(path, loadMode, threads)
    }

    override fun init() {
        checkNotNull(module) { "init before load" }.loadMethod("forward")
    }

    // The timed part: forward only. The [1, T, vocab] logits stay in the output tensor (16 MB at
    // T = 128) until lastLogits copies them, after the clock.
    override fun run(ids: LongArray, startPos: Int, commit: Boolean) {
        val m = checkNotNull(module) { "forward before load" }
        val tokens = Tensor.fromBlob(ids, longArrayOf(1, ids.size.toLong()))
        val pos = Tensor.fromBlob(longArrayOf(startPos.toLong()), longArrayOf(1))
        output = m.forward(EValue.from(tokens), EValue.from(pos))[0].toTensor()
    }

    override fun lastLogits(): FloatArray {
        val logits = checkNotNull(output) { "lastLogits before run" }
        val shape = logits.shape() // [1, T, vocab]
        val vocab = shape[shape.size - 1].toInt()
        val all = logits.dataAsFloatArray
        return all.copyOfRange(all.size - vocab, all.size)
    }

    override fun close() {
        output = null
        module?.destroy()
        module = null
    }
}

/**
 * An ONNX decode step: inputs `input_ids` int64 [1,T], `position_ids` int64 [1,T] (files written before
 * 2026-12-02: `tokens` [1,T] and `input_pos` [1]),
 * `past_key_values.N.key/value` [1, n_kv_heads, P, head_dim]; outputs `logits` and
 * `present.N.key/value` (P+T positions). The cache lives here, between calls. load: reading the
 * model bytes; init: creating the OrtSession from them.
 */
class OrtLlmSession(private val file: File, private val m: Manifest, private val threads: Int) : Benchmark.Session {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private var bytes: ByteArray? = null
    private var session: OrtSession? = null
    private var pastNames: List<String> = emptyList()
    private var legacy = false // inputs named tokens / input_pos (files written before 2026-12-02)
    private var past: List<OnnxTensor> = emptyList()
    private var pastOwned = true // our own empty tensors, else owned by `held`
    private var held: OrtSession.Result? = null
    private var pastLen = 0
    private var lastResult: OrtSession.Result? = null // an uncommitted run's outputs, until lastLogits
    private var lastLogitsTensor: OnnxTensor? = null

    override fun load() {
        // Reading into the Java heap is the definition of load; a model larger than a third of
        // the heap is read through (same disk cost) and the session opens it by path instead.
        if (file.length() < Runtime.getRuntime().maxMemory() / 3) {
            bytes = file.readBytes()
        } else {
            FileInputStream(file).channel.use { ch ->
                val buf = ByteBuffer.allocateDirect(1 shl 22)
                while (ch.read(buf) > 0) buf.clear()
            }
        }
    }

    override fun init() {
        val opts = OrtSession.SessionOptions()
        opts.setIntraOpNumThreads(threads)
        opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
        val b = bytes
        val s = if (b != null) env.createSession(b, opts) else env.createSession(file.path, opts)
        bytes = null
        session = s
        pastNames = s.inputNames.filter { it.startsWith("past_key_values.") }
        check(pastNames.size == 2 * m.executedBlocks) {
            "${file.name}: ${pastNames.size} past_key_values inputs, expected 2 x ${m.executedBlocks} executed blocks"
        }
        legacy = "tokens" in s.inputNames
        for (need in if (legacy) listOf("tokens", "input_pos") else listOf("input_ids", "position_ids")) {
            check(need in s.inputNames) { "${file.name}: no input '$need' (inputs: ${s.inputNames})" }
        }
        resetCache()
    }

    private fun emptyCache(name: String): OnnxTensor {
        val info = session!!.inputInfo[name]!!.info as TensorInfo
        val shape = longArrayOf(1, m.nKvHeads.toLong(), 0, m.headDim.toLong())
        return if (info.type == OnnxJavaType.FLOAT16) {
            OnnxTensor.createTensor(env, ByteBuffer.allocateDirect(0), shape, OnnxJavaType.FLOAT16)
        } else {
            OnnxTensor.createTensor(env, java.nio.FloatBuffer.allocate(0), shape)
        }
    }

    private fun releaseCache() {
        if (pastOwned) past.forEach { it.close() }
        held?.close()
        held = null
        past = emptyList()
    }

    private fun resetCache() {
        releaseCache()
        past = pastNames.map { emptyCache(it) }
        pastOwned = true
        pastLen = 0
    }

    // The timed part: the session run. The logits are read in lastLogits, after the clock
    // (OnnxTensor.getFloatBuffer copies the whole [1, T, vocab] output).
    override fun run(ids: LongArray, startPos: Int, commit: Boolean) {
        val s = checkNotNull(session) { "forward before init" }
        if (startPos == 0 && pastLen != 0) resetCache()
        check(startPos == pastLen) { "the ONNX cache holds $pastLen positions; cannot run at position $startPos" }
        lastResult?.close()
        lastResult = null
        val tokens = OnnxTensor.createTensor(env, LongBuffer.wrap(ids), longArrayOf(1, ids.size.toLong()))
        val pos = if (legacy) {
            OnnxTensor.createTensor(env, LongBuffer.wrap(longArrayOf(startPos.toLong())), longArrayOf(1))
        } else {
            val p = LongArray(ids.size) { startPos.toLong() + it }
            OnnxTensor.createTensor(env, LongBuffer.wrap(p), longArrayOf(1, ids.size.toLong()))
        }
        val inputs = HashMap<String, OnnxTensor>()
        inputs[if (legacy) "tokens" else "input_ids"] = tokens
        inputs[if (legacy) "input_pos" else "position_ids"] = pos
        pastNames.forEachIndexed { i, n -> inputs[n] = past[i] }
        val result = try {
            s.run(inputs)
        } finally {
            tokens.close()
            pos.close()
        }
        lastLogitsTensor = result.get("logits").get() as OnnxTensor
        if (commit) {
            // keep the presents as the next past without copying: the Result owns them (and the logits)
            val presents = pastNames.map { result.get(it.replace("past_key_values.", "present.")).get() as OnnxTensor }
            releaseCache()
            past = presents
            pastOwned = false
            held = result
            pastLen = startPos + ids.size
        } else {
            lastResult = result
        }
    }

    override fun lastLogits(): FloatArray {
        val logits = checkNotNull(lastLogitsTensor) { "lastLogits before run" }
        val shape = logits.info.shape // [1, T, vocab]
        val vocab = shape[shape.size - 1].toInt()
        val fb = logits.floatBuffer
        val last = FloatArray(vocab)
        fb.position(fb.limit() - vocab)
        fb.get(last)
        return last
    }

    override fun close() {
        lastResult?.close()
        lastResult = null
        lastLogitsTensor = null
        releaseCache()
        session?.close()
        session = null
    }
}
