package org.mobilellm.demo

import android.app.Activity
import android.os.Bundle
import android.os.SystemClock
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import java.io.File
import java.util.Locale
import kotlin.concurrent.thread
import org.mobilellm.core.Manifest

/**
 * Chat screen: pick an artifact (any manifest in /data/local/tmp/mobilellm or the app's external
 * files folder) and a tokenizer, type a prompt, watch the text stream in with time to first token
 * and decode tokens/s.
 */
class ChatActivity : Activity() {
    private val artifacts = mutableListOf<Manifest.Entry>()
    private val tokenizers = mutableListOf<File>()
    private lateinit var artifactSpinner: Spinner
    private lateinit var tokenizerSpinner: Spinner
    private lateinit var prompt: EditText
    private lateinit var maxNew: EditText
    private lateinit var button: Button
    private lateinit var stats: TextView
    private lateinit var output: TextView
    private lateinit var scroll: ScrollView

    private var engine: ChatEngine? = null
    private var engineKey: String? = null
    @Volatile private var busy = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_chat)
        artifactSpinner = findViewById(R.id.artifact)
        tokenizerSpinner = findViewById(R.id.tokenizer)
        prompt = findViewById(R.id.prompt)
        maxNew = findViewById(R.id.max_new)
        button = findViewById(R.id.generate)
        stats = findViewById(R.id.stats)
        output = findViewById(R.id.output)
        scroll = findViewById(R.id.scroll)
        button.setOnClickListener { if (busy) engine?.stop() else generate() }
        artifactSpinner.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                val art = artifacts.getOrNull(position) ?: return
                val own = Manifest.tokenizerFor(art.file.parentFile!!, art.file.name)
                val i = tokenizers.indexOfFirst { it == own }
                if (i >= 0) tokenizerSpinner.setSelection(i)
            }

            override fun onNothingSelected(parent: AdapterView<*>?) {}
        }
        scan()
    }

    private fun folders(): List<File> = listOfNotNull(File(DEFAULT_DIR), getExternalFilesDir(null))

    private fun scan() {
        artifacts.clear()
        tokenizers.clear()
        val notes = mutableListOf<String>()
        for (dir in folders()) {
            try {
                for (e in Manifest.scan(dir)) {
                    if (e.manifest != null) artifacts += e else notes += "${e.file.name}: ${e.problem}"
                }
            } catch (e: Manifest.Invalid) {
                notes += e.message ?: dir.path
            }
            dir.listFiles()?.filter { it.name.endsWith(".model") || it.name.endsWith("tokenizer.json") || it.name.endsWith(".bin") }
                ?.sortedBy { it.name }?.let { tokenizers += it }
        }
        findViewById<TextView>(R.id.folder).text =
            "Folders: ${folders().joinToString()}\n" + notes.joinToString("\n").ifEmpty { "${artifacts.size} artifacts" }
        artifactSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item,
            artifacts.map { "${it.file.name} (${it.manifest!!.runtime()})" })
        tokenizerSpinner.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, tokenizers.map { it.name })
    }

    private fun generate() {
        val art = artifacts.getOrNull(artifactSpinner.selectedItemPosition)
        val tok = tokenizers.getOrNull(tokenizerSpinner.selectedItemPosition)
        if (art == null || tok == null) {
            stats.text = "Push an artifact and its tokenizer first: mobilellm device android --artifacts DIR"
            return
        }
        val text = prompt.text.toString()
        val limit = maxNew.text.toString().toIntOrNull()?.coerceAtLeast(1) ?: 128
        busy = true
        button.text = getString(R.string.stop)
        output.text = text
        thread(name = "mobilellm-chat") {
            try {
                val key = "${art.file.path}|${tok.path}"
                var loadMs = -1.0
                if (key != engineKey) {
                    engine?.close()
                    engine = null
                    ui { stats.text = "loading ${art.file.name} ..." }
                    val t0 = SystemClock.elapsedRealtimeNanos()
                    engine = ChatEngine.open(art.file, art.manifest!!, tok, 4)
                    engineKey = key
                    loadMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
                }
                val start = SystemClock.elapsedRealtimeNanos()
                var first = 0L
                var last = 0L
                var pieces = 0
                val n = engine!!.generate(text, limit) { piece ->
                    last = SystemClock.elapsedRealtimeNanos()
                    if (pieces++ == 0) first = last
                    ui {
                        output.append(piece)
                        scroll.post { scroll.fullScroll(View.FOCUS_DOWN) }
                    }
                }
                val ttft = if (pieces > 0) (first - start) / 1e6 else Double.NaN
                val tps = if (n > 1 && last > first) (n - 1) / ((last - first) / 1e9) else Double.NaN
                val loaded = if (loadMs >= 0) String.format(Locale.ROOT, " | load+init %.0f ms", loadMs) else ""
                ui {
                    stats.text = String.format(Locale.ROOT, "TTFT %.0f ms | %.1f tokens/s | %d tokens%s", ttft, tps, n, loaded)
                }
            } catch (t: Throwable) {
                ui { stats.text = "error: ${t.message ?: t}" }
                engine?.close()
                engine = null
                engineKey = null
            } finally {
                busy = false
                ui { button.text = getString(R.string.generate) }
            }
        }
    }

    private fun ui(block: () -> Unit) = runOnUiThread { block() }

    override fun onDestroy() {
        engine?.stop()
        if (!busy) engine?.close()
        super.onDestroy()
    }
}
