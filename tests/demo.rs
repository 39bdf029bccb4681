//! `pound demo`: the whole job through the HTTP API, the engine, the store
//! and the simulated phone, for each way of pressing `#`.

use std::process::Command;

#[test]
fn the_demo_verifies_by_every_dtmf_path_from_any_folder() {
    // Run outside the checkout: the dialplan and prompts are compiled in.
    let folder = tempfile::tempdir().unwrap();
    for via in ["rfc4733", "inband", "info"] {
        let output = Command::new(env!("CARGO_BIN_EXE_pound"))
            .current_dir(folder.path())
            .args(["demo", "--dtmf", via])
            .output()
            .expect("pound demo runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{via}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        // Progress is shown as it goes, in lifecycle order (dialing lasts only
        // until the 180, too short for the 100 ms polling to be sure to see it).
        let order: Vec<usize> = ["status: queued", "status: ringing", "status: answered", "status: completed"]
            .iter()
            .map(|s| stdout.find(s).unwrap_or_else(|| panic!("{via}: no {s:?} in {stdout}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{via}: {stdout}");
        assert!(stdout.contains("\"outcome\": \"verified\""), "{stdout}");
        assert!(stdout.contains(&format!("\"dtmf_source\": \"{via}\"")), "{stdout}");
        assert!(stdout.contains("\"phone\": \"+14155550100\""), "the registration is printed: {stdout}");
    }
}
