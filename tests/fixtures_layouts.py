"""Tiny fake dataset layouts, laid out like each publisher's release, written into a test's tmp dir.

Every writer builds a handful of recordings (0.05 s sine waves written with soundfile) with the real
file names, folder names and CSV/JSON columns, plus a few deliberately broken entries (missing
audio, unknown labels, unparseable rows), and returns the facts a test checks against. Nothing here
is committed as a binary: the files exist only for the duration of a test.
"""

import json
import os
import pathlib
import zipfile
import zlib

import numpy as np
import soundfile as sf


def write_wav(path, *, seconds=0.05, sample_rate=4000, channels=1):
  """A short sine wave plus faint noise seeded by the file's path: no two files hold the same audio
  (prepare refuses one recording in two splits)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(seconds * sample_rate)) / sample_rate
  noise = np.random.default_rng(zlib.crc32(str(path).encode())).standard_normal(t.size)
  wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * noise).astype(np.float32)
  sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, sample_rate)
  return path


def _text(path, text, *, newline="\n"):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", encoding="utf-8", newline=newline) as f:
    f.write(text)
  return path


def icbhi(root):
  """ICBHI_final_database/ + the official split, diagnosis and demographics files (CRLF, tabs, NA)."""
  root = pathlib.Path(root)
  db = root / "ICBHI_final_database"
  cycles = "0.036\t1.5\t0\t0\n1.5\t3.2\t1\t0\n3.2\t4.9\t1\t1\n"
  recordings = {  # stem: (official split, annotation text, wav written?)
      "101_1b1_Al_sc_Meditron": ("test", cycles, True),
      "102_1b1_Ar_sc_Meditron": ("train", "0.1\t2.0\t0\t0\n", True),
      "103_2b2_Ar_mc_LittC2SE": ("train", "0.2\t1.9\t0\t1\nbad line here\n2.0\t1.0\t0\t0\n", True),
      "104_1b1_Al_sc_Litt3200": ("test", cycles, True),
      "105_1b1_Tc_sc_Meditron": ("train", cycles, True),
      "106_1b1_Pl_sc_AKGC417L": ("train", cycles, False),   # missing audio
      "107_1b1_Xx_sc_Meditron": ("train", cycles, True),    # unknown chest location code
      "108_1b1_Lr_sc_Meditron": (None, cycles, True),       # not in the official list
  }
  for stem, (_, text, wav) in recordings.items():
    _text(db / f"{stem}.txt", text)
    if wav:
      write_wav(db / f"{stem}.wav")
  _text(root / "ICBHI_challenge_train_test.txt",
        "".join(f"{s}\t{v[0]}\n" for s, v in recordings.items() if v[0]), newline="\r\n")
  _text(root / "ICBHI_Challenge_diagnosis.txt",
        "101\tURTI\n102\tHealthy\n103\tCOPD\n104\tCOPD\n105\tHealthy\n106\tCOPD\n107\tCOPD\n108\tAsthma\n",
        newline="\r\n")
  _text(root / "ICBHI_Challenge_demographic_information.txt",
        "101\t3\tF\tNA\t19\t99\n102\t0.75\tF\tNA\t9.8\t73\n103\t70\tF\t33\tNA\tNA\n104\t70\tF\t28.47\tNA\tNA\n"
        "105\t7\tM\tNA\t32\t135\n106\t75\tM\t25\tNA\tNA\n107\tNA\tNA\tNA\tNA\tNA\n108\t60\tM\t22\tNA\tNA\n",
        newline="\r\n")
  return {"usable": ["101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron", "103_2b2_Ar_mc_LittC2SE",
                     "104_1b1_Al_sc_Litt3200", "105_1b1_Tc_sc_Meditron"], "cycles_101": 3, "cycles_103": 1}


_CIRCOR_HEADER = ("Patient ID,Recording locations:,Age,Sex,Height,Weight,Pregnancy status,Murmur,Murmur locations,"
                  "Most audible location,Systolic murmur timing,Systolic murmur shape,Systolic murmur grading,"
                  "Systolic murmur pitch,Systolic murmur quality,Diastolic murmur timing,Diastolic murmur shape,"
                  "Diastolic murmur grading,Diastolic murmur pitch,Diastolic murmur quality,Outcome,Campaign,"
                  "Additional ID\n")


def circor(root):
  """training_data/validation_data/test_data tables + folders; a repeated location and a .txt header."""
  root = pathlib.Path(root)
  tables = {
      "training_data": [
          "9979,AV+PV+TV+MV,Child,Female,103.0,13.1,False,Present,AV+MV,TV,Holosystolic,Diamond,III/VI,High,"
          "Harsh,nan,nan,nan,nan,nan,Abnormal,CC2015,nan",
          "2530,AV+PV+PV,Child,Female,98.0,15.9,False,Absent,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,"
          "Abnormal,CC2015,50001",
          "9983,AV+XX,Infant,Male,nan,nan,False,Unknown,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,"
          "Normal,CC2015,nan",
          "9990,AV,Child,Male,nan,nan,False,Maybe,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,Normal,CC2015,nan",
      ],
      "validation_data": ["50001,MV,Child,Female,100.0,15.0,False,Absent,nan,nan,nan,nan,nan,nan,nan,nan,nan,"
                          "nan,nan,nan,Abnormal,CC2014,2530"],
      "test_data": ["50139,MV+TV,nan,Female,nan,nan,True,Present,MV+PV+TV,MV,Early-systolic,Decrescendo,I/VI,"
                    "Low,Blowing,nan,nan,nan,nan,nan,Normal,CC2014,nan"],
  }
  for name, rows in tables.items():
    _text(root / f"{name}.csv", _CIRCOR_HEADER + "".join(r + "\n" for r in rows))
  for name in ("9979_AV", "9979_PV", "9979_TV", "9979_MV", "2530_AV", "2530_PV_1", "2530_PV_2", "9983_AV"):
    write_wav(root / "training_data" / f"{name}.wav")
  write_wav(root / "validation_data" / "50001_MV.wav")
  write_wav(root / "test_data" / "50139_MV.wav")   # 50139_TV.wav is missing
  # A patient file naming its recordings (here a non-default name wins over the derived one).
  write_wav(root / "test_data" / "50139_TV_x.wav")
  _text(root / "test_data" / "50139.txt", "50139 2 4000\nMV 50139_MV.hea 50139_MV.wav 50139_MV.tsv\n"
                                           "TV 50139_TV.hea 50139_TV_y.wav 50139_TV.tsv\n#Age: nan\n")
  return {"recordings": {"9979_AV", "9979_PV", "9979_TV", "9979_MV", "2530_AV", "2530_PV_1", "2530_PV_2",
                         "9983_AV", "50001_MV", "50139_MV"}}


def kauh(root):
  """AudioFiles/ named as the publisher does (3 filters x subject), plus broken names."""
  root = pathlib.Path(root) / "AudioFiles"
  names = []
  for subject, fact in (("33", "Asthma,E W,P R M,43,F"), ("63", "COPD,E W,P R L ,58,F"),
                        ("30", "N,N,P L L,18,F"), ("52", "Lung Fibrosis,Crep,P L R,76,F"),
                        ("71", "copd,I C E W,A U R,50,M"), ("75", "N,N,P L U,73,M")):
    for f in "BDE":
      names.append(f"{f}P{subject}_{fact}.wav")
  for name in names + ["BP99_Flu,N,P L L,40,M.wav", "junk.wav"]:
    write_wav(root / name)
  return {"subjects": {"33", "63", "30", "52", "71", "75"}, "n": len(names)}


def respiratory_tr(root):
  """RespiratoryDatabase@TR/{patient}_{channel}.wav + Labels.csv (BOM, trailing comma) as OPERA ships it."""
  root = pathlib.Path(root)
  _text(root / "Labels.csv", "\ufeffPatient ID,Diagnosis,\nH002,COPD4,\nH003,COPD0,\nH004,COPD2,\nH005,COPD9,\n")
  for pid in ("H002", "H003", "H004", "H005", "H077"):
    for ch in ("L1", "R6"):
      write_wav(root / "RespiratoryDatabase@TR" / f"{pid}_{ch}.wav")
  return {"usable": 6}


def zchsound(root):
  """Clean (per-class sub-folders) and noisy (flat) subsets with the semicolon details files."""
  root = pathlib.Path(root)
  _text(root / "Clean Heartsound Data Details.csv",
        "fileName;gender;age(days);diagnosis\nZCH0001.wav;M;2310;NORMAL\nZCH0002.wav;F;186;ASD\n"
        "ZCH0003.wav;M;395;VSD\nZCH0004.wav;F;40;XYZ\nZCH0005.wav;F;60;PDA\n")
  _text(root / "Noise Heartsound Data Details.csv",
        "fileName;gender;age(days);diagnosis\nZCH0942.wav;M;2;PFO\n")
  write_wav(root / "clean Heartsound Data" / "NORMAL" / "ZCH0001.wav")
  write_wav(root / "clean Heartsound Data" / "ASD" / "ZCH0002.wav")
  write_wav(root / "clean Heartsound Data" / "VSD" / "ZCH0003.wav")
  write_wav(root / "clean Heartsound Data" / "ZCH0004.wav")   # ZCH0005 (PDA) is missing
  write_wav(root / "Noise Heartsound Data Details" / "ZCH0942.wav")
  return {"clean_usable": 3}


def sprsound(root):
  """BioCAS2022 train/test folders with JSON annotations and the patient summary."""
  root = pathlib.Path(root) / "BioCAS2022"

  def rec(folder, json_folder, stem, record, events):
    write_wav(root / folder / f"{stem}.wav")
    ann = {"record_annotation": record,
           "event_annotation": [{"start": str(s), "end": str(e), "type": t} for s, e, t in events]}
    _text(root / json_folder / f"{stem}.json", json.dumps(ann))

  rec("train2022_wav", "train2022_json", "65058931_3.4_1_p2_1086", "CAS",
      [(100, 900, "Normal"), (1000, 1800, "Wheeze")])
  rec("train2022_wav", "train2022_json", "65058931_3.4_1_p1_1087", "Normal", [(200, 1500, "Normal")])
  rec("train2022_wav", "train2022_json", "41106116_11.4_0_p3_1200", "DAS", [(0, 700, "Fine Crackle")])
  rec("train2022_wav", "train2022_json", "41106116_11.4_0_p4_1201", "Poor Quality", [])
  rec("train2022_wav", "train2022_json", "41279299_4.3_0_p1_1300", "Normal", [(0, 700, "Sneeze")])
  rec("test2022_wav", "test2022_json/inter_test_json", "40890405_3.3_0_p3_3655", "CAS & DAS",
      [(5778, 7419, "Wheeze+Crackle")])
  rec("test2022_wav", "test2022_json/intra_test_json", "41106116_11.4_0_p2_2000", "Normal", [(0, 500, "Normal")])
  _text(root / "test2022_json" / "inter_test_json" / "40000001_2.0_1_p1_9999.json",
        json.dumps({"record_annotation": "Normal", "event_annotation": []}))   # no wav
  _text(pathlib.Path(root).parent / "Patient Summary" / "SPRSound_patient_summary.csv",
        ",patient_num,disease,age,gender\n0,65058931,Asthma,3.4,F\n1,41106116,Pneumonia (non-severe),11.4,M\n"
        "2,40890405,Pneumonia (non-severe),3.3,M\n")
  return {"train": 3, "test": 1}


def coswara(root):
  """combined_data.csv, annotations/ and Extracted_data/{date}/{id}/{modality}.wav."""
  root = pathlib.Path(root)
  columns = ("id,l_c,a,covid_status,ep,g,l_s,l_l,diabetes,asthma,smoker,ht,fever,rU,um,cold,cough,mp,loss_of_smell,"
             "st,ftg,bd,cld,ihd,pneumonia,test_status,diarrhoea").split(",")
  rows = [{"id": "u1", "a": "24", "covid_status": "healthy", "g": "male"},
          {"id": "u2", "a": "72", "covid_status": "positive_mild", "g": "female", "asthma": "True", "smoker": "True",
           "fever": "True", "cough": "True", "cold": "False"},
          {"id": "u3", "a": "54", "covid_status": "healthy", "g": "pnts", "smoker": "False"},
          {"id": "u4", "a": "31", "covid_status": "healthy", "g": "female", "smoker": "y"},
          {"id": "u5", "a": "26", "covid_status": "healthy", "g": "male", "smoker": "n"},
          {"id": "u6", "a": "40", "covid_status": "healthy", "g": "male"}]
  _text(root / "combined_data.csv", ",".join(columns) + "\n" + "".join(
      ",".join(r.get(c, "India" if c == "l_c" else "") for c in columns) + "\n" for r in rows))
  _text(root / "annotations" / "cough-shallow_labels.csv",
        "FILENAME, QUALITY\nu1_cough-shallow,2\nu2_cough-shallow,1\nu3_cough-shallow,2\nu4_cough-shallow,0\n"
        "u5_cough-shallow,2\nu6_cough-shallow,2\n")
  for date, pid in (("20200413", "u1"), ("20200413", "u2"), ("20200415", "u3"), ("20200415", "u4"),
                    ("20200502", "u5")):   # u6 has no audio
    write_wav(root / "Extracted_data" / date / pid / "cough-shallow.wav")
  return {"sex_usable": {"u1", "u2", "u5"}, "smoker_usable": {"u2", "u3", "u5"}}


def coughvid(root):
  """public_dataset/metadata_compiled.csv with the published columns, .webm/.ogg files and wav/."""
  root = pathlib.Path(root)
  header = ("uuid,datetime,cough_detected,latitude,longitude,age,gender,respiratory_condition,fever_muscle_pain,"
            "status\n")
  rows = ["aaa,2020-04-13T21:30:59,0.9609,31.3,34.8,15,male,False,False,healthy",
          "bbb,2020-04-12T04:02:18,0.93,40.0,-75.1,34,female,True,True,COVID-19",
          "ccc,2020-04-12T04:02:18,0.5,,,40,male,False,False,healthy",
          "ddd,2020-04-12T04:02:18,0.99,,,40,other,False,False,symptomatic",
          "eee,2020-04-12T04:02:18,0.99,,,22,female,False,False,healthy",
          "fff,2020-04-12T04:02:18,notanumber,,,22,female,False,False,healthy"]
  _text(root / "public_dataset" / "metadata_compiled.csv", header + "".join(r + "\n" for r in rows))
  write_wav(root / "wav" / "aaa.wav")
  _text(root / "public_dataset" / "bbb.webm", "not really webm")
  write_wav(root / "public_dataset" / "ddd.wav")   # eee has no audio
  return {}


def ukcovid(root):
  """participant_metadata.csv, audio_metadata.csv, train_test_splits.csv and audio/."""
  root = pathlib.Path(root)
  _text(root / "participant_metadata.csv",
        "participant_identifier,covid_test_result,age,gender,smoker_status,respiratory_condition_asthma,"
        "symptom_cough_any,symptom_sore_throat\n"
        "p1,Positive,45-54,Female,Never smoked,0,1,1\np2,Negative,25-34,Male,Current smoker,1,0,0\n"
        "p3,Unknown/Void,35-44,Male,,0,0,0\np4,Negative,65-74,Female,,0,0,0\np5,Positive,18-24,Male,,0,0,0\n"
        "p6,Negative,18-24,Male,,0,0,0\n")
  _text(root / "audio_metadata.csv",
        "participant_identifier,exhalation_file_name,exhalation_size,exhalation_length,cough_file_name,cough_size\n"
        "p1,p1_exh.wav,12000,3.1,p1_cough.wav,8000\np2,p2_exh.wav,12000,3.0,p2_cough.wav,44\n"
        "p3,p3_exh.wav,12000,3.0,p3_cough.wav,8000\np4,p4_exh.wav,12000,3.0,p4_cough.wav,8000\n"
        "p5,p5_exh.wav,12000,3.0,p5_cough.wav,8000\np6,p6_exh.wav,12000,3.0,p6_cough.wav,8000\n")
  _text(root / "train_test_splits.csv",
        "participant_identifier,splits,original_splits\np1,train,train\np2,val,train\np3,test,test\n"
        "p4,long,test\np5,test,test\np6,train,train\n")
  for name in ("p1_exh", "p2_exh", "p3_exh", "p4_exh", "p5_exh", "p1_cough", "p2_cough", "p5_cough"):
    write_wav(root / "audio" / f"{name}.wav")   # p6's files are missing
  return {}


def write_xlsx(path, rows):
  """A minimal one-sheet .xlsx (inline strings and numbers), like a spreadsheet export."""
  def cell(col, r, v):
    ref = f"{chr(65 + col)}{r}"
    if isinstance(v, (int, float)):
      return f'<c r="{ref}"><v>{v}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t>{v}</t></is></c>'
  body = "".join(f'<row r="{i}">' + "".join(cell(j, i, v) for j, v in enumerate(row) if v is not None) + "</row>"
                 for i, row in enumerate(rows, start=1))
  ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                                      'package/2006/content-types"/>')
    z.writestr("xl/workbook.xml", f'<?xml version="1.0"?><workbook xmlns="{ns}"><sheets><sheet name="Sheet1" '
                                  'sheetId="1"/></sheets></workbook>')
    z.writestr("xl/worksheets/sheet1.xml", f'<?xml version="1.0"?><worksheet xmlns="{ns}"><sheetData>{body}'
                                           '</sheetData></worksheet>')
  return path


def mmlung(root, *, table="xlsx"):
  """Trimmed Data from phone/ task folders (stereo phone audio) + OPERA's All_path table."""
  root = pathlib.Path(root)
  phone = root / "Trimmed Data from phone"
  targets = {"1": (3.5, 2.9, 0.83), "2": (4.1, 3.0, 73.2), "3": (2.8, 1.6, 0.57), "10": (5.0, 4.0, 0.8)}
  for pid in ("1", "2", "3"):   # participant 10 has no recordings
    write_wav(phone / "9_3_deepbreath" / f"{pid}_deepbreaths.wav", channels=2)
    write_wav(phone / "5_2_O_single" / f"{pid}_vowelo.wav", channels=2)
  header = ["", "Spirometry_file", "O_Single_file", "Deep_Breath_file", "FVC", "FEV1", "FEV1/FVC"]
  rows = [[i, f"./spirometry_ground_truth/{p}_spiro.xls", f"./Trimmed Data from phone/5_2_O_single/{p}_vowelo.wav",
           f"./Trimmed Data from phone/9_3_deepbreath/{p}_deepbreaths.wav", *t] for i, (p, t) in enumerate(
               targets.items())]
  rows.append([9, "./spirometry_ground_truth/11_spiro.xls", "", "", "n/a", 1.0, 0.5])
  if table == "xlsx":
    write_xlsx(root / "All_path.xlsx", [header] + rows)
  elif table == "csv":
    _text(root / "All_path.csv", ",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
  else:   # Only the per-participant spreadsheets (real .xls, values where the published ones have them).
    import xlwt  # pylint: disable=import-outside-toplevel  (test extra)
    for p, values in targets.items():
      book = xlwt.Workbook()
      sheet = book.add_sheet("Sheet1")
      sheet.write(0, 0, "Spirometry report")
      for row, value in zip((22, 23, 24), values):
        sheet.write(row, 0, ("FVC", "FEV1", "FEV1/FVC")[row - 22])
        sheet.write(row, 1, value)
      (root / "spirometry_ground_truth").mkdir(parents=True, exist_ok=True)
      book.save(str(root / "spirometry_ground_truth" / f"{p}_spiro.xls"))
    _text(root / "spirometry_ground_truth" / "12_spiro.xls", "not a spreadsheet")
  return {"targets": targets}


def nosemic(root):
  """audio/{user}_{a}_{b}_{rate}.wav for a few users, plus malformed names."""
  root = pathlib.Path(root) / "audio"
  names = ["4_1_1_16.wav", "4_1_2_18.5.wav", "5_2_1_22.wav", "6_1_1_12.wav", "7_1_1_30.wav"]
  for name in names + ["8_1_16.wav", "9_1_1_abc.wav"]:
    write_wav(root / name)
  return {"n": len(names)}


def all_layouts(root):
  """Every layout under root/<adapter name>; returns {name: (folder, facts)}."""
  out = {}
  for name, writer in (("icbhi", icbhi), ("circor", circor), ("kauh", kauh), ("respiratory_tr", respiratory_tr),
                       ("zchsound", zchsound), ("sprsound", sprsound), ("coswara", coswara),
                       ("coughvid", coughvid), ("ukcovid", ukcovid), ("mmlung", mmlung), ("nosemic", nosemic)):
    folder = os.path.join(root, name)
    out[name] = (folder, writer(folder))
  return out
