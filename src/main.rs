fn main() -> std::process::ExitCode {
    flowcam_pipeline::cli::main()
}
