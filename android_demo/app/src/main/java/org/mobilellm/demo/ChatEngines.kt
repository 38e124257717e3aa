package org.mobilellm.demo

import java.io.Closeable
import java.io.File
import org.mobilellm.core.Manifest
import org.mobilellm.core.SentencePiece
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule

/** Streams generated text for a prompt; greedy, so backends can be compared on the same output. */
interface ChatEngine : Closeable {
    /** Calls `onText` with each new piece of text; returns the number of generated tokens. */
    fun generate(prompt: String, maxNew: Int, onText: (String) -> Unit): Int

    fun stop()

    companion object {
        fun open(file: File, m: Manifest, tokenizer: File, threads: Int): ChatEngine = when (m.runtime()) {
            "executorch" -> ExecuTorchChat(file, m, tokenizer)
            "onnxruntime" -> OrtChat(file, m, tokenizer, threads)
            else -> throw IllegalArgumentException(m.whyNotRunnable())
        }
    }
}

/**
 * ExecuTorch's LLM runner (LlmModule) with the tokenizer file; it reads the .pte's metadata methods.
 * BOS: the native runner takes the BOS count from the constructor only (jni_layer_llama.cpp passes
 * `num_bos_` to GenerationConfig and ignores generate's), and the 3-argument constructor sets 0; the
 * ONNX chat and `mobilellm generate` start with one BOS, so this one does too. A .pte + .ptd pair
 * (--external-weights) passes the data file as the constructor's dataPath.
 */
class ExecuTorchChat(file: File, private val m: Manifest, tokenizer: File) : ChatEngine {
    private val module = LlmModule(
        LlmModule.MODEL_TYPE_TEXT,
        file.path,
        tokenizer.path,
        0.0f, // temperature 0: greedy
        m.dataFile?.let { File(file.parentFile, it).path },
        BOS_COUNT,
        0, // numEos
    ).also { it.load() }

    override fun generate(prompt: String, maxNew: Int, onText: (String) -> Unit): Int {
        var n = 0
        module.resetContext()
        module.generate(prompt, m.maxSeqLen, object : LlmCallback {
            override fun onResult(result: String) {
                n++
                onText(result)
                if (n >= maxNew) module.stop()
            }

            override fun onError(errorCode: Int, message: String) {
                onText("\n[error $errorCode: $message]")
            }
        }, false)
        return n
    }

    override fun stop() = module.stop()

    override fun close() = module.close()

    companion object {
        /** One BOS before the prompt, as OrtChat and the host's generate. */
        const val BOS_COUNT = 1
    }
}

/**
 * An ONNX artifact (its onnxruntime-genai directory when pushed, else the file in a plain ONNX Runtime
 * session: Runtimes.onnx) + the Java SentencePiece tokenizer, greedy decoding with the KV cache.
 */
class OrtChat(file: File, private val m: Manifest, tokenizer: File, threads: Int) : ChatEngine {
    private val sp = SentencePiece.load(tokenizer)
    private val session = Runtimes.onnx(file, m, threads).also { it.load(); it.init() }

    @Volatile private var stopped = false

    init {
        require(sp.vocabSize() == m.vocabSize) {
            "${tokenizer.name} has ${sp.vocabSize()} pieces but ${m.artifact} a vocabulary of ${m.vocabSize}"
        }
    }

    override fun generate(prompt: String, maxNew: Int, onText: (String) -> Unit): Int {
        stopped = false
        val ids = (listOf(sp.bosId) + sp.encode(prompt)).map { it.toLong() }.toLongArray()
        require(ids.size < m.maxSeqLen) { "the prompt has ${ids.size} tokens; the artifact holds ${m.maxSeqLen}" }
        session.run(ids, 0, true)
        val out = ArrayList<Int>()
        var shown = ""
        var pos = ids.size
        while (!stopped && out.size < maxNew && pos < m.maxSeqLen) {
            val tok = session.nextToken().toInt() // argmax of the logits, or onnxruntime-genai's greedy choice
            if (tok == sp.eosId) break
            out += tok
            val text = sp.decode(out)
            if (text.length > shown.length && !text.endsWith("\uFFFD")) { // wait for whole UTF-8 characters
                onText(text.substring(shown.length))
                shown = text
            }
            session.run(longArrayOf(tok.toLong()), pos, true)
            pos++
        }
        return out.size
    }

    override fun stop() {
        stopped = true
    }

    override fun close() = session.close()
}
