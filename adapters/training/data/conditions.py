"""Source text of the bundled sample (plain, cautious, general health information).

Each entry: names, what it is, common symptoms, self-care, and when to see a doctor, in Chinese
and English. `build_sample.py` turns them into the sample files. This is a SAMPLE for trying
the training pipeline, not clinical guidance.
"""

from __future__ import annotations

# (key, zh name, en name,
#  zh about, en about, zh symptoms, en symptoms, zh care, en care, zh red flags, en red flags)
CONDITIONS: list[tuple[str, ...]] = [
    ("cold", "普通感冒", "the common cold",
     "普通感冒是由病毒引起的上呼吸道感染，通常一周左右可以自行好转。",
     "The common cold is a viral infection of the nose and throat that usually clears up "
     "within about a week.",
     "鼻塞、流鼻涕、打喷嚏、咽喉痛和轻微咳嗽",
     "a blocked or runny nose, sneezing, a sore throat and a mild cough",
     "多休息、多喝温水，保持室内空气流通；抗生素对病毒无效，不要自行服用。",
     "Rest, drink plenty of fluids and keep the room aired; antibiotics do not work against "
     "viruses, so do not take them on your own.",
     "高热超过三天、呼吸困难、胸痛，或者症状持续超过十天",
     "a high fever for more than three days, difficulty breathing, chest pain, or symptoms "
     "lasting longer than ten days"),
    ("flu", "流行性感冒", "influenza (flu)",
     "流行性感冒由流感病毒引起，起病急，全身症状比普通感冒重。",
     "Influenza is caused by the flu virus; it starts suddenly and makes you feel more unwell "
     "than a cold.",
     "突然发热、全身酸痛、乏力、头痛和干咳",
     "a sudden fever, aching muscles, tiredness, headache and a dry cough",
     "在家休息、补充水分，与家人保持距离并勤洗手；每年接种流感疫苗是有效的预防方法。",
     "Stay home, rest and drink fluids, keep some distance from others and wash your hands "
     "often; a yearly flu vaccine is an effective way to prevent it.",
     "呼吸急促、胸闷、意识模糊、持续高热，或者老人、孕妇和慢性病患者出现症状",
     "shortness of breath, chest tightness, confusion, a fever that will not come down, or "
     "symptoms in older adults, pregnant women and people with long-term conditions"),
    ("hypertension", "高血压", "high blood pressure",
     "高血压是指血压长期高于正常范围，常常没有明显症状，却会增加心脏病和中风的风险。",
     "High blood pressure means your blood pressure stays above the normal range; it often "
     "causes no symptoms but raises the risk of heart disease and stroke.",
     "多数人没有症状，少数人会有头晕、头痛或颈后发紧",
     "usually no symptoms at all, though some people notice dizziness, headaches or a tight "
     "feeling in the neck",
     "少吃盐、多吃蔬菜水果、控制体重、规律运动、戒烟限酒，按医嘱服药并定期测量血压。",
     "Eat less salt, more vegetables and fruit, keep a healthy weight, exercise regularly, stop "
     "smoking, limit alcohol, take medicines as prescribed and check your blood pressure "
     "regularly.",
     "剧烈头痛、胸痛、视物模糊、一侧肢体无力或说话不清",
     "a severe headache, chest pain, blurred vision, weakness on one side of the body or "
     "slurred speech"),
    ("diabetes", "2型糖尿病", "type 2 diabetes",
     "2型糖尿病是身体不能有效利用胰岛素，导致血糖长期偏高的慢性病。",
     "Type 2 diabetes is a long-term condition in which the body cannot use insulin properly, "
     "so blood sugar stays too high.",
     "口渴、多尿、容易饿、体重下降和疲劳，也有不少人早期没有症状",
     "thirst, passing urine often, hunger, weight loss and tiredness, although many people have "
     "no symptoms early on",
     "控制饮食总量、少吃精制糖、坚持运动、监测血糖，并按医嘱用药和定期复查。",
     "Watch portion sizes, cut down on sugary foods, stay active, monitor your blood sugar, and "
     "take medicines and attend check-ups as advised.",
     "血糖持续很高、极度口渴、恶心呕吐、呼吸有烂苹果味或意识不清",
     "very high blood sugar readings, extreme thirst, nausea and vomiting, fruity-smelling "
     "breath or confusion"),
    ("migraine", "偏头痛", "migraine",
     "偏头痛是一种反复发作的头痛，常在一侧，可持续数小时到数天。",
     "Migraine is a recurring headache, often on one side of the head, that can last from hours "
     "to days.",
     "搏动性头痛、怕光怕声、恶心，有些人发作前会看到闪光",
     "a throbbing headache, sensitivity to light and sound, nausea, and in some people flashing "
     "lights before an attack",
     "发作时在安静昏暗的房间休息，规律作息，记录头痛日记找出诱因，止痛药应在医生指导下使用。",
     "Rest in a quiet, dark room during an attack, keep regular sleep and meals, keep a headache "
     "diary to find triggers, and use painkillers as a doctor advises.",
     "突然出现的剧烈头痛、伴有发热和颈部僵硬、肢体无力或头痛性质明显改变",
     "a sudden, very severe headache, a headache with fever and a stiff neck, weakness in a limb, "
     "or a clear change in your usual headaches"),
    ("gastritis", "胃炎", "gastritis",
     "胃炎是胃黏膜的炎症，常与饮食不规律、饮酒、某些药物或幽门螺杆菌感染有关。",
     "Gastritis is inflammation of the stomach lining, often linked to irregular meals, alcohol, "
     "some medicines or Helicobacter pylori infection.",
     "上腹部隐痛或烧灼感、饱胀、恶心和食欲下降",
     "a dull or burning pain in the upper abdomen, bloating, nausea and loss of appetite",
     "规律进餐、少食多餐，避免辛辣、酒精和浓茶咖啡；不要长期自行服用止痛药。",
     "Eat regular, smaller meals and avoid spicy food, alcohol, strong tea and coffee; do not "
     "take painkillers for long periods on your own.",
     "呕血、黑便、持续剧烈腹痛或不明原因的体重下降",
     "vomiting blood, black stools, severe ongoing abdominal pain or unexplained weight loss"),
    ("insomnia", "失眠", "insomnia",
     "失眠是指入睡困难、容易醒或早醒，并影响白天的精力。",
     "Insomnia means trouble falling asleep, waking often or waking too early, so that you feel "
     "tired during the day.",
     "入睡需要很久、夜间多次醒来、白天困倦和注意力不集中",
     "taking a long time to fall asleep, waking several times at night, daytime sleepiness and "
     "poor concentration",
     "固定作息时间，睡前一小时远离手机，下午后少喝咖啡和茶，卧室保持安静、黑暗和凉爽。",
     "Keep fixed sleep and wake times, put screens away an hour before bed, avoid coffee and tea "
     "after midday, and keep the bedroom quiet, dark and cool.",
     "失眠持续超过一个月、伴有情绪低落，或者需要依赖药物才能入睡",
     "insomnia lasting more than a month, low mood alongside it, or needing medicines to sleep"),
    ("asthma", "哮喘", "asthma",
     "哮喘是气道的慢性炎症，遇到诱因时气道变窄，引起喘息。",
     "Asthma is long-term inflammation of the airways, which narrow when something triggers them "
     "and cause wheezing.",
     "喘息、胸闷、气短和夜间或清晨咳嗽",
     "wheezing, a tight chest, breathlessness and coughing at night or early in the morning",
     "避开已知诱因如烟雾和尘螨，按医嘱规律使用控制药物，随身携带缓解吸入剂。",
     "Avoid known triggers such as smoke and dust mites, use your preventer medicine as "
     "prescribed, and always carry your reliever inhaler.",
     "吸入缓解药后仍喘不过气、说话困难、嘴唇发紫",
     "breathlessness that does not improve with the reliever inhaler, difficulty speaking, or "
     "blue lips"),
    ("uti", "尿路感染", "a urinary tract infection",
     "尿路感染多由细菌引起，女性更常见。",
     "A urinary tract infection is usually caused by bacteria and is more common in women.",
     "尿频、尿急、排尿时灼痛，尿液浑浊或有异味",
     "needing to pass urine often and urgently, a burning feeling when passing urine, and cloudy "
     "or strong-smelling urine",
     "多喝水、不要憋尿，注意个人卫生；是否需要抗生素应由医生判断。",
     "Drink plenty of water, do not hold in urine and keep the area clean; a doctor should decide "
     "whether you need antibiotics.",
     "发热、寒战、腰背部疼痛、尿中带血，或者孕妇和男性出现症状",
     "fever, chills, pain in the back or side, blood in the urine, or symptoms in pregnant women "
     "or in men"),
    ("eczema", "湿疹", "eczema",
     "湿疹是一种常见的炎症性皮肤病，皮肤干燥、发痒，容易反复。",
     "Eczema is a common inflammatory skin condition that makes the skin dry and itchy and tends "
     "to come back.",
     "皮肤发红、干燥、瘙痒，严重时有渗液或结痂",
     "red, dry and itchy skin, and in worse cases weeping or crusting",
     "每天使用保湿霜，洗澡水不要太热，穿柔软的棉质衣物，尽量不要抓挠。",
     "Use a moisturiser every day, avoid very hot baths, wear soft cotton clothes and try not to "
     "scratch.",
     "皮肤出现渗液、化脓、发热，或者瘙痒严重影响睡眠",
     "weeping or pus, a fever, or itching so bad that it disturbs your sleep"),
    ("back_pain", "腰痛", "lower back pain",
     "大多数腰痛与肌肉劳损或姿势不良有关，通常几周内会好转。",
     "Most lower back pain comes from strained muscles or poor posture and gets better within a "
     "few weeks.",
     "腰部酸痛、活动受限，久坐或弯腰后加重",
     "aching and stiffness in the lower back that gets worse after sitting long or bending",
     "保持适度活动而不是长期卧床，注意坐姿，避免搬重物，可以局部热敷。",
     "Stay gently active rather than resting in bed for long, mind your posture, avoid heavy "
     "lifting, and try a warm compress.",
     "腿部麻木无力、大小便失控、发热，或者外伤后疼痛",
     "numbness or weakness in the legs, loss of bladder or bowel control, fever, or pain after an "
     "injury"),
    ("anemia", "缺铁性贫血", "iron-deficiency anaemia",
     "缺铁性贫血是体内铁不足导致红细胞生成减少。",
     "Iron-deficiency anaemia happens when the body lacks iron and makes fewer red blood cells.",
     "乏力、面色苍白、头晕、心慌和气短",
     "tiredness, pale skin, dizziness, a racing heart and shortness of breath",
     "多吃富含铁的食物如瘦肉、动物肝脏和深绿色蔬菜，补铁剂应在医生确认后服用。",
     "Eat iron-rich foods such as lean meat, liver and dark green vegetables, and take iron "
     "tablets only after a doctor has confirmed the cause.",
     "黑便、月经量明显增多、胸痛或头晕到站立困难",
     "black stools, much heavier periods, chest pain, or dizziness so bad you cannot stand"),
    ("sprain", "踝关节扭伤", "a sprained ankle",
     "踝关节扭伤是韧带被过度拉伸或部分撕裂，运动中很常见。",
     "A sprained ankle is a stretched or partly torn ligament and is common in sport.",
     "踝部疼痛、肿胀、淤青，行走时疼痛加重",
     "pain, swelling and bruising around the ankle that gets worse when walking",
     "受伤后早期休息、冰敷、加压包扎并抬高患肢，消肿后逐步恢复活动。",
     "In the first days rest, apply ice, use a compression bandage and raise the foot, then "
     "return to activity step by step as the swelling goes down.",
     "无法承重行走、踝部明显变形、麻木，或者几天后仍未好转",
     "being unable to put weight on the foot, an obviously misshapen ankle, numbness, or no "
     "improvement after a few days"),
    ("conjunctivitis", "结膜炎", "conjunctivitis",
     "结膜炎俗称红眼病，可由病毒、细菌或过敏引起。",
     "Conjunctivitis, often called pink eye, can be caused by viruses, bacteria or allergies.",
     "眼睛发红、发痒、流泪，分泌物增多",
     "red, itchy and watery eyes with more discharge than usual",
     "勤洗手，不要揉眼睛，毛巾单独使用；感染性结膜炎期间暂停佩戴隐形眼镜。",
     "Wash your hands often, do not rub your eyes and keep your own towel; stop wearing contact "
     "lenses while an infection lasts.",
     "眼痛明显、视力下降、怕光，或者新生儿出现症状",
     "marked eye pain, blurred vision, sensitivity to light, or symptoms in a newborn baby"),
    ("heartburn", "胃食管反流", "acid reflux",
     "胃食管反流是胃酸反流到食管，引起烧心。",
     "Acid reflux is when stomach acid flows back into the food pipe and causes heartburn.",
     "胸骨后烧灼感、反酸，饭后或平躺时加重",
     "a burning feeling behind the breastbone and a sour taste, worse after meals or when lying "
     "down",
     "少食多餐、睡前三小时不进食，抬高床头，减少油腻食物、咖啡和酒精。",
     "Eat smaller meals, do not eat for three hours before bed, raise the head of the bed and cut "
     "down on fatty food, coffee and alcohol.",
     "吞咽困难、呕血、黑便、体重下降，或者胸痛伴出汗气短",
     "difficulty swallowing, vomiting blood, black stools, weight loss, or chest pain with "
     "sweating and breathlessness"),
    ("dehydration", "脱水", "dehydration",
     "脱水是身体丢失的水分多于摄入，常见于腹泻、呕吐、高温或运动后。",
     "Dehydration means the body loses more fluid than it takes in, often after diarrhoea, "
     "vomiting, hot weather or exercise.",
     "口渴、尿少色深、头晕和乏力",
     "thirst, passing little dark urine, dizziness and tiredness",
     "少量多次喝水，腹泻呕吐时可以使用口服补液盐，避免在高温下剧烈活动。",
     "Drink small amounts often, use oral rehydration salts after diarrhoea or vomiting, and "
     "avoid hard exercise in the heat.",
     "意识模糊、十二小时以上没有排尿、无法喝水，或者婴幼儿和老人出现脱水表现",
     "confusion, no urine for twelve hours or more, being unable to keep fluids down, or signs "
     "of dehydration in babies and older people"),
    ("diarrhea", "急性腹泻", "acute diarrhoea",
     "急性腹泻多由肠道感染或不洁饮食引起，大多数几天内好转。",
     "Acute diarrhoea is usually caused by a gut infection or unsafe food and mostly settles "
     "within a few days.",
     "大便次数增多、稀水样便、腹痛，可能伴有恶心",
     "loose, watery stools more often than usual, stomach cramps and sometimes nausea",
     "及时补充水分和电解质，清淡饮食，注意手卫生；不要自行使用止泻药或抗生素。",
     "Replace fluids and salts, eat plain food and wash your hands carefully; do not take "
     "anti-diarrhoea medicines or antibiotics on your own.",
     "大便带血、高热、严重腹痛、脱水表现，或者腹泻超过三天",
     "blood in the stool, a high fever, severe abdominal pain, signs of dehydration, or "
     "diarrhoea lasting more than three days"),
    ("allergic_rhinitis", "过敏性鼻炎", "hay fever",
     "过敏性鼻炎是鼻黏膜对花粉、尘螨等过敏原的过敏反应。",
     "Hay fever, or allergic rhinitis, is an allergic reaction of the nose to pollen, dust "
     "mites and similar allergens.",
     "连续打喷嚏、清水样鼻涕、鼻痒和鼻塞，有时眼睛也发痒",
     "bouts of sneezing, a clear runny nose, an itchy and blocked nose, and sometimes itchy eyes",
     "尽量避开过敏原，花粉季节减少外出并关窗，可以用生理盐水洗鼻，药物请在医生指导下使用。",
     "Avoid your allergens where you can, keep windows closed in pollen season, try saline nasal "
     "rinses, and use medicines as a doctor or pharmacist advises.",
     "出现喘息、呼吸困难，或者症状严重影响睡眠和工作",
     "wheezing or difficulty breathing, or symptoms that badly disturb sleep or work"),
    ("gout", "痛风", "gout",
     "痛风是血尿酸过高、尿酸盐在关节沉积引起的关节炎。",
     "Gout is arthritis caused by high uric acid levels, with urate crystals building up in a "
     "joint.",
     "关节突然红肿热痛，常见于大脚趾，多在夜间发作",
     "a suddenly red, hot, swollen and very painful joint, often the big toe and often at night",
     "多喝水，少吃动物内脏、海鲜和浓肉汤，限制饮酒尤其是啤酒，控制体重。",
     "Drink plenty of water, cut down on organ meats, seafood and rich meat broths, limit "
     "alcohol, especially beer, and keep a healthy weight.",
     "发热伴关节红肿、多个关节同时受累，或者第一次出现这样的关节痛",
     "a fever with a swollen joint, several joints affected at once, or the first time you have "
     "such joint pain"),
    ("anxiety", "焦虑", "anxiety",
     "焦虑是对未来事情过度担心的状态，长期持续会影响生活。",
     "Anxiety is a feeling of excessive worry about what may happen; when it lasts it can get in "
     "the way of daily life.",
     "紧张不安、心慌、出汗、难以放松和睡眠不好",
     "feeling tense and restless, a racing heart, sweating, finding it hard to relax and poor "
     "sleep",
     "规律运动、保证睡眠、练习深呼吸和放松训练，与信任的人谈谈自己的感受。",
     "Exercise regularly, protect your sleep, practise slow breathing and relaxation, and talk to "
     "someone you trust about how you feel.",
     "焦虑持续数周并影响工作生活，或者出现伤害自己的想法",
     "anxiety that lasts for weeks and affects work or daily life, or any thoughts of harming "
     "yourself"),
    ("osteoporosis", "骨质疏松", "osteoporosis",
     "骨质疏松是骨量减少、骨骼变脆，更容易骨折，绝经后女性和老年人多见。",
     "Osteoporosis is a loss of bone strength that makes bones fragile and easier to break; it is "
     "most common in women after menopause and in older people.",
     "早期通常没有症状，可能出现身高变矮、驼背或轻微外伤后骨折",
     "usually no symptoms at first, then loss of height, a stooped back or a fracture after a "
     "minor fall",
     "保证钙和维生素D的摄入，多晒太阳，坚持负重运动，预防跌倒。",
     "Get enough calcium and vitamin D, spend some time in daylight, do weight-bearing exercise "
     "and take steps to prevent falls.",
     "跌倒后疼痛无法活动、突然出现剧烈背痛",
     "pain and being unable to move after a fall, or sudden severe back pain"),
    ("constipation", "便秘", "constipation",
     "便秘是指排便次数减少、大便干硬或排出困难。",
     "Constipation means passing stools less often, or stools that are hard and difficult to "
     "pass.",
     "排便费力、大便干结、腹胀，一周少于三次排便",
     "straining, hard and lumpy stools, bloating, and fewer than three bowel movements a week",
     "多吃蔬菜、水果和全谷物，多喝水，适量运动，养成定时排便的习惯。",
     "Eat more vegetables, fruit and whole grains, drink more water, stay active and try to go "
     "at a regular time each day.",
     "大便带血、体重不明原因下降、排便习惯突然改变，或者严重腹痛",
     "blood in the stool, unexplained weight loss, a sudden change in bowel habit, or severe "
     "abdominal pain"),
    ("sore_throat", "咽喉炎", "a sore throat",
     "咽喉痛大多由病毒感染引起，一般一周内好转。",
     "Most sore throats are caused by viral infections and get better within a week.",
     "咽喉疼痛、吞咽时加重，可伴有声音嘶哑和低热",
     "a painful throat that hurts more when swallowing, sometimes with a hoarse voice and a mild "
     "fever",
     "多喝温水，用淡盐水漱口，少说话，避免吸烟和辛辣食物。",
     "Drink warm fluids, gargle with salt water, rest your voice, and avoid smoking and spicy "
     "food.",
     "张口或吞咽困难、流口水、呼吸困难，或者高热持续不退",
     "difficulty opening the mouth or swallowing, drooling, difficulty breathing, or a high "
     "fever that will not come down"),
    ("high_cholesterol", "高血脂", "high cholesterol",
     "高血脂是血液中胆固醇或甘油三酯偏高，会增加动脉粥样硬化的风险。",
     "High cholesterol means too much cholesterol or triglyceride in the blood, which raises the "
     "risk of hardened arteries.",
     "通常没有症状，多在体检抽血时发现",
     "usually no symptoms; it is mostly found by a blood test at a check-up",
     "减少饱和脂肪和油炸食品，多吃蔬菜、豆类和全谷物，规律运动，戒烟，并按医嘱复查。",
     "Cut down on saturated fat and fried food, eat more vegetables, beans and whole grains, "
     "exercise regularly, stop smoking and have follow-up tests as advised.",
     "出现胸痛、胸闷、一侧肢体无力等心脑血管症状",
     "chest pain, chest tightness, weakness on one side of the body or other signs of heart "
     "attack or stroke"),
]

# Closing sentences, rotated so answers do not all end alike.
CLOSINGS_ZH = [
    "以上是一般性的健康信息，不能代替医生的面诊。",
    "如果不确定，最好请医生当面评估。",
    "每个人情况不同，具体处理请听从医生的建议。",
]
CLOSINGS_EN = [
    "This is general health information and does not replace an examination by a doctor.",
    "If you are unsure, it is best to have a doctor assess you in person.",
    "Everyone is different, so please follow the advice of your own doctor.",
]
