from collections import Counter

import pytest

from dataset.taxonomy import UnknownLabelsError, load_taxonomy, normalize_label

GUIDE_GENERA = [
    "Acanthastrea", "Acropora", "Astreopora", "Atrea", "Fungia", "Goniastrea", "Leptastrea",
    "Merulinidae", "Millepora", "Montastrea", "Montipora", "Other", "Pavona/Leptoseris",
    "Pocillopora", "Porites", "Psammocora",
]  # fmt: skip


def test_fine_taxonomy_is_background_plus_the_guides_genera():
    fine = load_taxonomy("fine")
    assert fine.classes == ("background", *GUIDE_GENERA)
    assert fine.num_classes == 17
    assert fine.palette[0] == (0, 0, 0)
    assert len(set(fine.palette)) == fine.num_classes, "colours must tell classes apart"
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in fine.palette)


def test_aliases_match_regardless_of_case_spacing_and_separators():
    fine = load_taxonomy("fine")
    pavona = fine.classes.index("Pavona/Leptoseris")
    for label in ["Pavona/Leptoseris", "pavona_leptoseris", " PAVONA - LEPTOSERIS", "Leptoseris"]:
        assert fine.index_of(label) == pavona
    assert fine.index_of("Astrea") == fine.classes.index("Atrea")
    assert normalize_label("Pavona / Leptoseris") == "pavonaleptoseris"


def test_coarse_maps_every_genus_to_one_family():
    fine, coarse = load_taxonomy("fine"), load_taxonomy("coarse")
    assert coarse.classes[0] == "background"
    assert coarse.num_classes == 7  # the guide's "main families (7 classes)"
    expected = {
        "Acropora": "Acroporidae", "Montipora": "Acroporidae", "Pocillopora": "Pocilloporidae",
        "Porites": "Poritidae", "Goniastrea": "Merulinidae", "Pavona/Leptoseris": "Agariciidae",
        "Fungia": "Other", "Millepora": "Other",
    }  # fmt: skip
    for genus, family in expected.items():
        assert coarse.classes[coarse.index_of(genus)] == family
    for genus in fine.classes[1:]:
        assert coarse.index_of(genus) not in (None, 0), genus
    # aliases of the fine taxonomy work at the coarse level, and so do family names
    assert coarse.classes[coarse.index_of("leptoseris")] == "Agariciidae"
    assert coarse.classes[coarse.index_of("acroporidae")] == "Acroporidae"


def test_unknown_labels_are_listed_with_counts_or_sent_to_ignore():
    fine = load_taxonomy("fine")
    counts = Counter({"Acropora": 5, "Seaweed": 3, "sponge": 1})
    with pytest.raises(UnknownLabelsError, match=r"'Seaweed' \(3\), 'sponge' \(1\)"):
        fine.resolve(counts)
    mapping = fine.resolve(counts, unknown="ignore")
    assert mapping == {"Acropora": 2, "Seaweed": 255, "sponge": 255}


def test_unknown_taxonomy_name_lists_known_ones():
    with pytest.raises(FileNotFoundError, match=r"known taxonomies: \['coarse', 'fine'\]"):
        load_taxonomy("medium")


def test_a_coarse_file_missing_a_genus_is_refused(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\nrefines: fine\nclasses:\n"
        "  - {name: background, color: [0, 0, 0]}\n"
        "  - {name: Acroporidae, color: [1, 2, 3], members: [Acropora]}\n"
    )
    with pytest.raises(ValueError, match="no class lists these 'fine' classes as members"):
        load_taxonomy(broken)
