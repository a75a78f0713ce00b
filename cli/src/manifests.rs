//! `berth validate`: strict decoding of manifests from files, directories or
//! standard input, with errors that name the file, field path and line.

use berth_proto::Object;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Manifest files or directories (*.yaml, *.yml, *.json), or - for standard input
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Print the decoded objects in berth's normal form instead of a summary
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Format>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Yaml,
    Json,
}

pub fn validate(args: &ValidateArgs) -> ExitCode {
    let mut failed = false;
    for source in args.files.iter().flat_map(|p| expand(p)) {
        let result =
            source.and_then(|(name, text)| decode(&name, &text).map(|objects| (name, objects)));
        match result {
            Ok((name, objects)) => print_objects(&name, &objects, args.output),
            Err(message) => {
                eprintln!("error: {message}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_objects(name: &str, objects: &[Object], output: Option<Format>) {
    for object in objects {
        match output {
            Some(Format::Yaml) => print!("---\n{}", object.to_yaml()),
            Some(Format::Json) => println!("{}", String::from_utf8_lossy(&object.to_json())),
            None => println!(
                "{name}: {}/{} valid",
                object.kind().to_lowercase(),
                object.metadata().name
            ),
        }
    }
}

pub(crate) fn decode(name: &str, text: &str) -> Result<Vec<Object>, String> {
    let json = name.ends_with(".json") || text.trim_start().starts_with('{');
    if json {
        Object::from_json(text.as_bytes()).map(|o| vec![o])
    } else {
        Object::from_yaml_documents(text)
    }
    .map_err(|e| format!("{name}: {e}"))
}

/// The texts named by one argument: a file, every manifest in a directory
/// (sorted, not recursive, as kubectl does without -R), or standard input.
pub(crate) fn expand(path: &Path) -> Vec<Result<(String, String), String>> {
    let name = path.display().to_string();
    if name == "-" {
        let mut text = String::new();
        return vec![std::io::stdin()
            .read_to_string(&mut text)
            .map(|_| ("<stdin>".to_string(), text))
            .map_err(|e| format!("<stdin>: {e}"))];
    }
    if path.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => return vec![Err(format!("{name}: {e}"))],
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        return files.iter().flat_map(|p| expand(p)).collect();
    }
    vec![std::fs::read_to_string(path)
        .map(|text| (name.clone(), text))
        .map_err(|e| format!("{name}: {e}"))]
}
