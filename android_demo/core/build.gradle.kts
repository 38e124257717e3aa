// Platform-free logic (manifest reader, statistics, results writer, benchmark procedure,
// SentencePiece tokenizer): plain Java, no Android imports, unit-tested on the JVM.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

dependencies {
    testImplementation(libs.junit)
}
